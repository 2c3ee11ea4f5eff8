"""The oracle experiment: exact scores plus controlled errors, sampled and measured (issue 7).

Tests the claim of Vuong, McCann, Santos & Lin (*Are We Learning the Score Function?*) that an
error e in the score leaves density transport unchanged when it lies in the null space of the
Stein operator, (grad + S) . e = 0, i.e. div(rho_t e) = 0. With the closed-form score S of a
dataset (``zoo.create("exact", ...)``) the error can be chosen, not learned:

    s(x, t) = S(x, t) + m u(x, t),   u = c(t) e_hat(x, t),   c(t)^2 = E_rho_t|S|^2 / E_rho_t|e_hat|^2,

so m = sqrt(E_rho_t |s - S|^2 / E_rho_t |S|^2) at every t. The unit directions e_hat (kinds):

    none      0                                   (reference)
    gradient  grad h                              conservative: the score of another density path
    divfree   A grad psi                          div e = 0 (Euclidean), not Stein-null
    stein     A (grad psi + psi S) = rho^-1 A grad(rho psi)     div(rho_t e) = 0 exactly
    generic   sum_j b_j cos(w_j . x + c_j)        a random smooth vector field

with A a random antisymmetric matrix and h, psi random Fourier features (``RandomFourier``), all
drawn from default_rng([7, seed]); divfree and stein share psi and A, so they differ only by
the psi S term. c(t) is computed by Monte Carlo over rho_t on a grid of t and interpolated by a
cubic Hermite spline in log t (``Calibration``).

Why the Stein null space: the probability-flow ODE dx/dt = -1/2 beta (x + s) moves a density by
d rho/dt = -div(rho v), and s = S + e adds 1/2 beta div(rho e) to the right-hand side. The reverse
SDE (drift -1/2 beta x - beta s) adds beta div(rho e), twice as much, but also zero on the null
space. Both are invariant only along the true marginals rho_t: what remains is the solvers'
discretisation and the prior mismatch N(0, I) vs rho_T.

``run_oracle`` samples every (kind, m, solver, seed) cell with ``zoo.sampling.sample_field`` and
scores it with ``zoo.evaluate.evaluate_samples`` beside noise floors from 20 real-vs-real draws
(``zoo.evaluate.noise_floors``: computed once per (data, n, schedule), cached on disk), and
measures each perturbed field with ``zoo.diagnostics.check_field`` (NAsym, circulation) and
``stein_residual``; ``write_oracle`` writes the table (markdown, CSV), JSON and the figure.

Files: ``perturbations`` (the perturbed fields and their measures), ``experiment`` (``OracleConfig``,
``run_oracle``), ``report`` (``verdicts``, ``markdown``, ``write_oracle``).
"""

from __future__ import annotations

from zoo.oracle.experiment import OracleConfig, compute_floors, plan_cells, run_oracle, summarise
from zoo.oracle.perturbations import (
    DEFAULT_MAGNITUDES,
    KINDS,
    Calibration,
    Perturbation,
    PerturbedScore,
    RandomFourier,
    field_measures,
    forward_draw,
    make_field,
    random_antisymmetric,
    stein_residual,
    stratified_draw,
)
from zoo.oracle.report import CSV_FIELDS, csv_text, figure_png, markdown, verdicts, write_oracle

__all__ = ["CSV_FIELDS", "DEFAULT_MAGNITUDES", "KINDS", "Calibration", "OracleConfig", "Perturbation",
           "PerturbedScore", "RandomFourier", "compute_floors", "csv_text", "field_measures",
           "figure_png", "forward_draw", "make_field", "markdown", "plan_cells", "random_antisymmetric",
           "run_oracle", "stein_residual", "stratified_draw", "summarise", "verdicts", "write_oracle"]
