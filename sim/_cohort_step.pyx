# cython: boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Compiled hourly step of the cohort plant: one pass over the patients, the same equations as NumPy.

:class:`sim.cohort_plant.CohortPlant` calls :func:`step` (one step, with lumbar
boluses and tablets) or :func:`step_hours` (several steps of intrathecal input
only, each patient's steps in turn while its data is in cache) with its arrays;
both apply the same per-patient step (``_advance``), so a patient's figures are
the same whichever is used. The NumPy path of the same class is the reference it is tested against
(``tests/cohort/test_plant_compiled.py``). The exact linear step is
``x1 = Phi x0 + Gamma u``, over the entries of ``Phi`` that are not zero for every patient (the
model's structure: about half of them), in the order of the full product, so the sums are the
full product's; then the tolerance (:func:`sim.patient.next_tolerance`),
the withdrawal onset and level (:func:`sim.patient.in_withdrawal`) and the overdose
level (:func:`sim.patient.overdose_level`), and the peaks and the day's flags.
This is a plant model, not dosing arithmetic: floats, and no bounds checks in
the inner loop (each entry point checks every shape once).
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


cdef inline void _advance(double* x, const double* phi, const int* row_start, const int* columns,
                          const double* gamma, double* tolerance, const double* decays, double* withdrawal_since_h,
                          signed char* peak_overdose, signed char* peak_withdrawal, unsigned char* today0,
                          unsigned char* today1, unsigned char* today2, const double* fp, double intrathecal_ng,
                          double bolus_ng, double gut_ng, double step_h, double time_h) noexcept nogil:
    """One patient, one step: ``x`` (10 states) and the flag state, in place (see :func:`step`).

    ``gut_ng`` is the absorbed part of the tablets (``oral_ng * oral_bioavailability``).
    """
    cdef double x0[N_STATES]
    cdef double acc, before, after, mean, w, spinal, threshold, elapsed
    cdef int overdose, withdrawal, r, e
    for r in range(N_STATES):
        x0[r] = x[r]
    x0[CSF] += bolus_ng
    x0[GUT] += gut_ng
    before = x0[BRAIN]
    for r in range(N_STATES):
        acc = gamma[r] * (intrathecal_ng / step_h)
        for e in range(row_start[r], row_start[r + 1]):
            acc += phi[e] * x0[columns[e]]
        x[r] = acc
    after = x[BRAIN]
    mean = 0.5 * (before + after)
    tolerance[0] = mean + (tolerance[0] - mean) * (decays[0] if mean > tolerance[0] else decays[1])
    w = fp[0]
    spinal = w * x[FAST] + (1.0 - w) * x[SLOW]
    withdrawal = 0
    if x[DEPENDENCE] >= fp[2] * fp[1] and spinal < fp[3] * x[DEPENDENCE]:
        if isnan(withdrawal_since_h[0]):
            withdrawal_since_h[0] = time_h
        elapsed = time_h - withdrawal_since_h[0]
        withdrawal = 2 if elapsed >= fp[4] else 1
    else:
        withdrawal_since_h[0] = NAN
    threshold = fp[5] + fp[6] * (tolerance[0] if tolerance[0] > 0 else 0.0)
    overdose = 2 if after >= fp[7] * threshold else (1 if after >= threshold else 0)
    if overdose > peak_overdose[0]:
        peak_overdose[0] = overdose
    if withdrawal > peak_withdrawal[0]:
        peak_withdrawal[0] = withdrawal
    if overdose > 0:
        today0[0] = 1
    if withdrawal > 0:
        today1[0] = 1
    if withdrawal >= 2:
        today2[0] = 1


cdef int _check(double[:, ::1] phi_values, int[::1] row_start, int[::1] columns, double[:, ::1] gamma_it,
                double[:, ::1] x, double[::1] tolerance, double[:, ::1] decays, double[::1] withdrawal_since_h,
                signed char[::1] peak_overdose, signed char[::1] peak_withdrawal, unsigned char[:, ::1] today,
                double[:, ::1] flag_parameters) except -1:
    """Refuse arrays whose shapes do not fit ``x`` (N patients) or a structure that does not fit ``phi_values``."""
    cdef Py_ssize_t n = x.shape[0], k = phi_values.shape[1], r, e
    if (phi_values.shape[0] != n or row_start.shape[0] != N_STATES + 1 or columns.shape[0] != k
            or x.shape[1] != N_STATES
            or gamma_it.shape[0] != n or gamma_it.shape[1] != N_STATES or tolerance.shape[0] != n
            or decays.shape[0] != n or decays.shape[1] != 2
            or withdrawal_since_h.shape[0] != n or peak_overdose.shape[0] != n or peak_withdrawal.shape[0] != n
            or today.shape[0] != 3 or today.shape[1] != n or flag_parameters.shape[0] != n
            or flag_parameters.shape[1] != len(FLAG_PARAMETERS)):
        raise ValueError("arrays of mismatched shapes")
    if row_start[0] != 0 or row_start[N_STATES] != k:
        raise ValueError("row_start does not cover phi_values")
    for r in range(N_STATES):
        if row_start[r + 1] < row_start[r]:
            raise ValueError("row_start is not ascending")
    for e in range(k):
        if not 0 <= columns[e] < N_STATES:
            raise ValueError("a column outside the states")
    return 0


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
    _check(phi_values, row_start, columns, gamma_it, x, tolerance, decays, withdrawal_since_h, peak_overdose,
           peak_withdrawal, today, flag_parameters)
    cdef Py_ssize_t n = x.shape[0], i
    if oral_bioavailability.shape[0] != n or intrathecal_ng.shape[0] != n or bolus_ng.shape[0] != n \
            or oral_ng.shape[0] != n:
        raise ValueError("arrays of mismatched shapes")
    if n == 0:
        return
    for i in range(n):
        _advance(&x[i, 0], &phi_values[i, 0], &row_start[0], &columns[0], &gamma_it[i, 0], &tolerance[i],
                 &decays[i, 0], &withdrawal_since_h[i], &peak_overdose[i], &peak_withdrawal[i], &today[0, i],
                 &today[1, i], &today[2, i], &flag_parameters[i, 0], intrathecal_ng[i], bolus_ng[i],
                 oral_ng[i] * oral_bioavailability[i], step_h, time_h)


def step_hours(double[:, ::1] phi_values, int[::1] row_start, int[::1] columns, double[:, ::1] gamma_it,
               double[:, ::1] x, double[::1] tolerance, double[:, ::1] decays,
               double[::1] withdrawal_since_h, signed char[::1] peak_overdose, signed char[::1] peak_withdrawal,
               unsigned char[:, ::1] today, double[:, ::1] flag_parameters, double[:, ::1] intrathecal_ng,
               double[::1] times_h, unsigned char[::1] closes_day, int[::1] overdose_days, int[::1] withdrawal_days,
               int[::1] severe_withdrawal_days, double step_h):
    """Advance every patient ``S`` steps of intrathecal input only: what ``S`` calls of :func:`step` do.

    Each patient takes its ``S`` steps in turn (its arrays stay in cache); patients are independent,
    so the figures are those of ``S`` passes over all of them, with no bolus and no tablet (the
    step adds their zero to the states, as :func:`step` does).

    :param intrathecal_ng: (S, N): row ``s`` is the drug reaching the catheter tip during step ``s``, ng.
    :param times_h: (S,) plant time at the end of each step, h.
    :param closes_day: (S,) 1 where a day ends with the step: the day's flags are added to the day
        counts and cleared, after the step's flags.
    :param overdose_days: days with any overdose flag, updated in place.
    :param withdrawal_days: days with any withdrawal flag, updated in place.
    :param severe_withdrawal_days: days with severe withdrawal, updated in place.

    The other arrays are those of :func:`step`.

    :raises ValueError: for arrays of mismatched shapes, or a structure that does not fit them.
    """
    _check(phi_values, row_start, columns, gamma_it, x, tolerance, decays, withdrawal_since_h, peak_overdose,
           peak_withdrawal, today, flag_parameters)
    cdef Py_ssize_t n = x.shape[0], steps = intrathecal_ng.shape[0], i, s
    if (intrathecal_ng.shape[1] != n or times_h.shape[0] != steps or closes_day.shape[0] != steps
            or overdose_days.shape[0] != n or withdrawal_days.shape[0] != n or severe_withdrawal_days.shape[0] != n):
        raise ValueError("arrays of mismatched shapes")
    if n == 0 or steps == 0:
        return
    for i in range(n):
        for s in range(steps):
            _advance(&x[i, 0], &phi_values[i, 0], &row_start[0], &columns[0], &gamma_it[i, 0], &tolerance[i],
                     &decays[i, 0], &withdrawal_since_h[i], &peak_overdose[i], &peak_withdrawal[i], &today[0, i],
                     &today[1, i], &today[2, i], &flag_parameters[i, 0], intrathecal_ng[s, i], 0.0, 0.0,
                     step_h, times_h[s])
            if closes_day[s]:
                overdose_days[i] += today[0, i]
                withdrawal_days[i] += today[1, i]
                severe_withdrawal_days[i] += today[2, i]
                today[0, i] = 0
                today[1, i] = 0
                today[2, i] = 0
