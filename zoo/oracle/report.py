"""The oracle's writers: verdicts, markdown and CSV tables, the figure."""

from __future__ import annotations

import csv
import io
from pathlib import Path


def _fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def _diag_of(result: dict, kind: str, m: float) -> dict:
    for r in result["diagnostics"]:
        if r["kind"] == kind and r["magnitude"] == m:
            return r
    return {}


def _main_rows(result: dict, solver: str) -> dict[tuple[str, float], dict]:
    steps = result["settings"]["sde_steps"] if solver == "sde" else None
    return {(r["kind"], r["magnitude"]): r for r in result["summary"]
            if r["solver"] == solver and r["steps"] == steps}


def verdicts(result: dict, z_max: float = 2.0) -> list[str]:
    """One line per (solver, kind): up to which magnitude W2 stays within z_max floor stds."""
    lines = []
    mags = result["settings"]["magnitudes"]
    ref = result["floors"]["mean_log_density"][0]

    def dlogp(r: dict) -> str:
        return _fmt(None if r["mean_log_density"] is None else r["mean_log_density"] - ref, "+.3f")

    for solver in ("ode", "sde"):
        rows = _main_rows(result, solver)
        for kind in result["settings"]["kinds"]:
            if kind == "none":
                r = rows.get(("none", 0.0))
                if r:
                    lines.append(f"{solver.upper()} none: W2 {_fmt(r['w2'], '.4f')} "
                                 f"(z = {_fmt(r['w2_z'], '+.1f')}), Δlog ρ {dlogp(r)}")
                continue
            zs = [(m, rows[(kind, m)]["w2_z"]) for m in mags if (kind, m) in rows]
            ok = [m for m, z in zs if z is not None and z < z_max]
            first_bad = next((m for m, z in zs if z is None or z >= z_max), None)
            top = rows[(kind, mags[-1])]
            if first_bad is None:
                verdict = f"within the floor (z < {z_max:g}) at every m up to {mags[-1]:g}"
            elif not ok or first_bad == mags[0]:
                verdict = f"above the floor from the smallest m = {mags[0]:g}"
            else:
                verdict = f"within the floor up to m = {max(m for m in ok if m < first_bad):g}, " \
                          f"above from m = {first_bad:g}"
            lines.append(f"{solver.upper()} {kind}: {verdict}; at m = {mags[-1]:g} W2 "
                         f"{_fmt(top['w2'], '.4f')} (z = {_fmt(top['w2_z'], '+.1f')}), "
                         f"Δlog ρ {dlogp(top)}")
    return lines


def markdown(result: dict) -> str:
    """The results as markdown: settings, floors, the main table, refinement table, verdicts."""
    s = result["settings"]
    fl = result["floors"]
    lines = [f"# Oracle: exact score + controlled errors on `{s['data']}` (d = {s['dim']})", "",
             "s = S + m u: S the closed-form score of rho_t, u a calibrated error direction with "
             "E|u|^2 = E|S|^2 under rho_t at every t (zoo/oracle/perturbations.py). Kinds: "
             "`gradient` grad h; `divfree` A grad psi; `stein` A (grad psi + psi S), "
             "div(rho_t e) = 0; `generic` a random vector field.", "",
             f"Settings: n = {s['n']} samples per cell (and n reference points of rho_t_min), "
             f"seeds {s['seeds']} (0..{s['seeds'] - 1}: error draw, x_T, Brownian path), "
             f"schedule {s['schedule']} (t_min = {s['t_min']:g}, T = {s['T']:g}), float64; "
             f"ODE {s['ode_method']} rtol = atol = {s['rtol']:g}; SDE {s['sde_method']} "
             f"{s['sde_steps']} steps (t-grid rho = 2); no final denoising. Errors: "
             f"{s['features']} random Fourier features, length scale {s['length_scale']:g}; "
             f"magnitude calibrated on {s['calib_grid']} times x {s['calib_points']} points. "
             f"Wall time {result['wall_s'] / 60:.1f} min.", "",
             f"Noise floors ({s['repeats']} real-vs-real draws of n vs n): "
             f"W2 {fl['w2'][0]:.4f} ± {fl['w2'][1]:.4f}, SW2 {fl['sliced_w2'][0]:.4f} ± "
             f"{fl['sliced_w2'][1]:.4f}, MMD² {fl['mmd_rbf'][0]:.1e} ± {fl['mmd_rbf'][1]:.1e}, "
             f"mean log ρ of real data {fl['mean_log_density'][0]:.4f} ± "
             f"{fl['mean_log_density'][1]:.4f}.", "",
             "Columns: m̂ measured magnitude (mean over t), NAsym and circulation (|Γ| / ∮|s||dx|, "
             "polygon loops, median) from `zoo.diagnostics.check_field`, Stein rel = "
             "sqrt(E r² / E[(div e)² + (S·e)²]), r = div e + S·e (0: Stein-null); per solver W2 "
             "(mean ± sd over seeds), z = (W2 − floor) / floor sd, Δlog ρ = mean log ρ_t_min of "
             "samples − of real data, shift = RMS distance of each sample from the `none` sample "
             "with the same x_T (and noise).", ""]
    hdr = ["kind", "m", "m̂", "NAsym", "circ.", "Stein rel"]
    for sv in ("ODE", "SDE"):
        hdr += [f"{sv} W2", f"{sv} z", f"{sv} Δlog ρ", f"{sv} shift"]
    hdr += ["ODE NFE"]
    lines += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    ode, sde = _main_rows(result, "ode"), _main_rows(result, "sde")
    ref_logp = fl["mean_log_density"][0]
    for key in ode:
        kind, m = key
        dg = _diag_of(result, kind, m)
        cells = [kind, f"{m:g}", _fmt(dg.get("m_hat"), ".3f"), _fmt(dg.get("nasym"), ".2e"),
                 _fmt(dg.get("circulation"), ".2e"), _fmt(dg.get("stein_rel"), ".1e")]
        for rows in (ode, sde):
            r = rows.get(key)
            if r is None:
                cells += ["—"] * 4
                continue
            dl = None if r["mean_log_density"] is None else r["mean_log_density"] - ref_logp
            cells += [f"{_fmt(r['w2'], '.4f')} ± {_fmt(r['w2_sd'], '.4f')}",
                      _fmt(r["w2_z"], "+.1f"), _fmt(dl, "+.3f"), _fmt(r["shift"], ".3f")]
        cells.append(f"{ode[key]['nfe']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    refine = [r for r in result["summary"] if r["solver"] == "sde" and r["steps"] != s["sde_steps"]]
    if refine:
        lines += ["", f"SDE step refinement at m = {s['magnitudes'][-1]:g} (seed 0; W2 (z); "
                  "Δlog ρ): a gap that shrinks with the step is discretisation, not the "
                  "continuous-time SDE.", ""]
        steps_all = sorted({s["sde_steps"], *(r["steps"] for r in refine)})
        lines += ["| kind | " + " | ".join(f"{k} steps" for k in steps_all) + " |",
                  "|---|" + "---|" * len(steps_all)]
        for kind in s["kinds"]:
            m = 0.0 if kind == "none" else s["magnitudes"][-1]
            cells = [kind]
            for k in steps_all:
                r = next((c for c in result["cells"] if c["kind"] == kind and c["magnitude"] == m
                          and c["solver"] == "sde" and c["steps"] == k and c["seed"] == 0), None)
                w = None if r is None else r["metrics"].get("w2")
                lp = None if r is None else r["metrics"].get("mean_log_density")
                cells.append("—" if w is None or lp is None else
                             f"{w:.4f} ({(w - fl['w2'][0]) / fl['w2'][1]:+.1f}); "
                             f"{lp - fl['mean_log_density'][0]:+.3f}")
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Verdicts (computed from the table: z < 2 on W2)", ""]
    lines += [f"- {v}" for v in verdicts(result)]
    lines += ["", "Files: `oracle.csv` (every metric, mean and sd over seeds, with floors), "
              "`oracle.json` (every cell and seed, diagnostics per t, calibration), `oracle.png`."]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ("kind", "magnitude", "solver", "method", "steps", "seeds", "finite", "nfe", "shift",
              "w2_z")


def csv_text(result: dict) -> str:
    """The summary as CSV: one row per (kind, m, solver, steps), every metric with sd and floor."""
    diag_keys = ("m_hat", "nasym", "circulation", "stein_rel")
    metric_cols = []
    for k in result["floors"]:
        metric_cols += [k, f"{k}_sd", f"{k}_floor", f"{k}_floor_sd"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*CSV_FIELDS, *diag_keys, *metric_cols])
    for r in result["summary"]:
        dg = _diag_of(result, r["kind"], r["magnitude"])
        w.writerow([("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS]
                   + [dg.get(k, "") for k in diag_keys]
                   + [("" if r.get(k) is None else r[k]) for k in metric_cols])
    return buf.getvalue()


def figure_png(result: dict) -> bytes:
    """W2 and MMD² vs magnitude, one line per kind, ODE and SDE side by side, floors drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, fl = result["settings"], result["floors"]
    colors = {"none": "k", "gradient": "tab:blue", "divfree": "tab:orange", "stein": "tab:green",
              "generic": "tab:red"}
    fig, axes = plt.subplots(3, 2, figsize=(10, 10.5), sharex=True)
    ref = fl["mean_log_density"][0]
    mags = s["magnitudes"]
    for col, solver in enumerate(("ode", "sde")):
        rows = _main_rows(result, solver)
        for row, metric, label in ((0, "w2", "W2 to rho_t_min data"), (1, "mmd_rbf", "MMD²"),
                                   (2, "mean_log_density", "mean log rho_t_min − real data's")):
            ax = axes[row, col]
            fm, fs = fl[metric]
            off = ref if metric == "mean_log_density" else 0.0  # plot log rho as a gap
            fm -= off
            ax.axhspan(fm - 2 * fs, fm + 2 * fs, color="0.85", label="noise floor ± 2 sd")
            ax.axhline(fm, color="0.5", lw=1, ls=":")
            for kind in s["kinds"]:
                if kind == "none":
                    r = rows.get(("none", 0.0))
                    if r and r[metric] is not None:
                        ax.axhline(r[metric] - off, color="k", lw=1.2, ls="--",
                                   label="none (exact)")
                    continue
                pts = [(m, rows[(kind, m)]) for m in mags if (kind, m) in rows]
                pts = [(m, r) for m, r in pts if r[metric] is not None]
                if not pts:
                    continue
                ax.errorbar([m for m, _ in pts], [r[metric] - off for _, r in pts],
                            yerr=[r[f"{metric}_sd"] for _, r in pts], marker="o", ms=4,
                            capsize=2, color=colors.get(kind), label=kind)
            ax.set_xscale("log")
            ax.set_yscale("log" if metric == "w2" else "symlog",
                          **({} if metric == "w2" else {"linthresh": max(abs(fm) + 2 * fs, 1e-6)}))
            steps = f", {s['sde_steps']} steps" if solver == "sde" else ""
            method = s["ode_method"] if solver == "ode" else s["sde_method"]
            ax.set_title(f"{solver.upper()} ({method}{steps}): {label}", fontsize=9)
            if row == 2:
                ax.set_xlabel("relative error magnitude m")
            ax.grid(alpha=0.3, which="both")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Oracle on {s['data']}: exact score + error of size m "
                 f"(n = {s['n']}, {s['seeds']} seeds; mean ± sd)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_oracle(result: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write oracle.json, oracle.csv, oracle.md and oracle.png into out_dir (each atomically).

    Everything is rendered in memory first, so a failure leaves no file half-written.
    """
    from zoo import checkpoint

    out = Path(out_dir)
    blobs = {"oracle.md": markdown(result).encode(), "oracle.csv": csv_text(result).encode(),
             "oracle.png": figure_png(result)}
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    checkpoint.write_json(out / "oracle.json", result)
    paths["oracle.json"] = out / "oracle.json"
    for name, blob in blobs.items():
        checkpoint.atomic_write(out / name, blob)
        paths[name] = out / name
    return paths
