"""The dosing firmware as a library: prescriptions, titration, boluses, reservoir, alarms, journal, control loop.

Build it through its one front door, :func:`controller.assembly.build_controller`, from a
prescription and its signed file, a patient record, a pump driver, a clock and a
:class:`controller.store.Store`. A request to change therapy passes
:meth:`~controller.assembly.Controller.act` or :meth:`~controller.assembly.Controller.act_signed`
(who may ask for what: :mod:`controller.roles`; keys and signatures: :mod:`controller.signing`).
A rate is decided in :mod:`controller.therapy` (through the kernel's gate,
:mod:`controller.gate`) and sent in :mod:`controller.commands`.

``controller`` imports ``hal`` and the floor (``cython_ext``: the kernel and its value
modules) only; never ``sim`` or ``hil``.
"""
