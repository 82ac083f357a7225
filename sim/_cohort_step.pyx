# cython: boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Compiled hourly step of the cohort plant: one pass over the patients, the same equations as NumPy.

:class:`sim.cohort_plant.CohortPlant` calls :func:`step` with its arrays; the
NumPy path of the same class is the reference it is tested against
(``tests/cohort/test_plant_compiled.py``). The exact linear step is
``x1 = Phi x0 + Gamma u``, over the entries of ``Phi`` that are not zero for every patient (the
model's structure: about half of them), in the order of the full product, so the sums are the
full product's; then the tolerance (:func:`sim.patient.next_tolerance`),
the withdrawal onset and level (:func:`sim.patient.in_withdrawal`) and the overdose
level (:func:`sim.patient.overdose_level`), and the peaks and the day's flags.
This is a plant model, not dosing arithmetic: floats, and no bounds checks in
the inner loop (:func:`step` checks every shape once).
"""

import numpy as np

from libc.math cimport exp, isnan, NAN

#: Order of the flag parameters in the ``flag_parameters`` array (one row per patient).
FLAG_PARAMETERS = (
    "fast_fraction", "ec50_ng_per_ml", "dependence_floor_ratio", "withdrawal_ratio",
    "severe_withdrawal_after_h", "sedation_threshold_ng_per_ml", "tolerance_gain", "respiratory_ratio",
    "tolerance_build_tau_h", "tolerance_fade_tau_h",
)

cdef enum:
    N_STATES = 10  # the indices of sim.patient
    GUT = 0
    CSF = 2
    FAST = 4
    SLOW = 6
    BRAIN = 7
    DEPENDENCE = 8


def tolerance_decays(double[:, ::1] flag_parameters, double step_h):
    """Each patient's tolerance decay factors over one step: ``exp(-step_h / tau)`` for building and fading.

    Computed once for a plant (the taus do not change), with the C library's ``exp``.

    :param flag_parameters: (N, 10) in the order of :data:`FLAG_PARAMETERS`.
    :param step_h: step length, h.
    :return: (N, 2): building, fading.
    """
    cdef Py_ssize_t n = flag_parameters.shape[0], i
    if flag_parameters.shape[1] != len(FLAG_PARAMETERS):
        raise ValueError("arrays of mismatched shapes")
    out = np.empty((n, 2))
    cdef double[:, ::1] d = out
    for i in range(n):
        d[i, 0] = exp(-step_h / flag_parameters[i, 8])
        d[i, 1] = exp(-step_h / flag_parameters[i, 9])
    return out


def step(double[:, ::1] phi_values, int[::1] row_start, int[::1] columns, double[:, ::1] gamma_it,
         double[:, ::1] x, double[::1] tolerance, double[:, ::1] decays,
         double[::1] withdrawal_since_h, signed char[::1] peak_overdose, signed char[::1] peak_withdrawal,
         unsigned char[:, ::1] today, double[:, ::1] flag_parameters, double[::1] oral_bioavailability,
         double[::1] intrathecal_ng, double[::1] bolus_ng, double[::1] oral_ng, double step_h, double time_h):
    """Advance every patient one step of ``step_h`` hours, ending at plant time ``time_h``.

    :param phi_values: per-patient entries of the step matrices that are not zero for every patient,
        (N, K), row by row and by column within a row.
    :param row_start: where each row's entries begin in ``phi_values``, (11,): row ``r`` is
        ``row_start[r]:row_start[r + 1]``.
    :param columns: each entry's column, (K,), ascending within a row.
    :param gamma_it: per-patient intrathecal input column, (N, 10), per ng/h.
    :param x: states, (N, 10), updated in place.
    :param tolerance: tolerance levels, ng/mL, updated in place.
    :param decays: (N, 2) from :func:`tolerance_decays` for ``step_h``.
    :param withdrawal_since_h: onset of the current withdrawal, h (NaN: none), updated in place.
    :param peak_overdose: highest overdose level so far, updated in place.
    :param peak_withdrawal: highest withdrawal level so far, updated in place.
    :param today: (3, N) flags of the day so far (overdose, withdrawal, severe), updated in place.
    :param flag_parameters: (N, 10) in the order of :data:`FLAG_PARAMETERS`.
    :param oral_bioavailability: share of a tablet absorbed, (N,).
    :param intrathecal_ng: drug reaching the catheter tip during the step, ng, (N,).
    :param bolus_ng: lumbar injections at the step's start, ng, (N,).
    :param oral_ng: tablets at the step's start, ng, (N,).
    :param step_h: step length, h.
    :param time_h: plant time at the end of the step, h.
    :raises ValueError: for arrays of mismatched shapes, or a structure that does not fit them.
    """
    cdef Py_ssize_t n = x.shape[0], k = phi_values.shape[1], i, r, e
    if (phi_values.shape[0] != n or row_start.shape[0] != N_STATES + 1 or columns.shape[0] != k
            or x.shape[1] != N_STATES
            or gamma_it.shape[0] != n or gamma_it.shape[1] != N_STATES or tolerance.shape[0] != n
            or decays.shape[0] != n or decays.shape[1] != 2
            or withdrawal_since_h.shape[0] != n or peak_overdose.shape[0] != n or peak_withdrawal.shape[0] != n
            or today.shape[0] != 3 or today.shape[1] != n or flag_parameters.shape[0] != n
            or flag_parameters.shape[1] != len(FLAG_PARAMETERS) or oral_bioavailability.shape[0] != n
            or intrathecal_ng.shape[0] != n or bolus_ng.shape[0] != n or oral_ng.shape[0] != n):
        raise ValueError("arrays of mismatched shapes")
    if row_start[0] != 0 or row_start[N_STATES] != k:
        raise ValueError("row_start does not cover phi_values")
    for r in range(N_STATES):
        if row_start[r + 1] < row_start[r]:
            raise ValueError("row_start is not ascending")
    for e in range(k):
        if not 0 <= columns[e] < N_STATES:
            raise ValueError("a column outside the states")
    cdef double x0[N_STATES]
    cdef double acc, before, after, mean, w, spinal, threshold, elapsed
    cdef int overdose, withdrawal
    for i in range(n):
        for r in range(N_STATES):
            x0[r] = x[i, r]
        x0[CSF] += bolus_ng[i]
        x0[GUT] += oral_ng[i] * oral_bioavailability[i]
        before = x0[BRAIN]
        for r in range(N_STATES):
            acc = gamma_it[i, r] * (intrathecal_ng[i] / step_h)
            for e in range(row_start[r], row_start[r + 1]):
                acc += phi_values[i, e] * x0[columns[e]]
            x[i, r] = acc
        after = x[i, BRAIN]
        mean = 0.5 * (before + after)
        tolerance[i] = mean + (tolerance[i] - mean) * (decays[i, 0] if mean > tolerance[i] else decays[i, 1])
        w = flag_parameters[i, 0]
        spinal = w * x[i, FAST] + (1.0 - w) * x[i, SLOW]
        withdrawal = 0
        if x[i, DEPENDENCE] >= flag_parameters[i, 2] * flag_parameters[i, 1] \
                and spinal < flag_parameters[i, 3] * x[i, DEPENDENCE]:
            if isnan(withdrawal_since_h[i]):
                withdrawal_since_h[i] = time_h
            elapsed = time_h - withdrawal_since_h[i]
            withdrawal = 2 if elapsed >= flag_parameters[i, 4] else 1
        else:
            withdrawal_since_h[i] = NAN
        threshold = flag_parameters[i, 5] + flag_parameters[i, 6] * (tolerance[i] if tolerance[i] > 0 else 0.0)
        overdose = 2 if after >= flag_parameters[i, 7] * threshold else (1 if after >= threshold else 0)
        if overdose > peak_overdose[i]:
            peak_overdose[i] = overdose
        if withdrawal > peak_withdrawal[i]:
            peak_withdrawal[i] = withdrawal
        if overdose > 0:
            today[0, i] = 1
        if withdrawal > 0:
            today[1, i] = 1
        if withdrawal >= 2:
            today[2, i] = 1
