"""Sub-commands beyond ``hermite``: solve, plot, timescales, demo."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
from pathlib import Path

import numpy as np

from .config import merge_values
from .errors import InputError, IntegrationError
from .io import json_safe

# symbolic.committee.BACKENDS, spelled out so that --help does not import SymPy (a test keeps them equal)
BACKEND_CHOICES = ("auto", "erf", "polynomial", "relu", "hermite", "quadrature")


def add_model_args(p, eps_required=True, eps_help="learning-rate ratio eps > 0"):
    p.add_argument("--sigma", required=True, help="activation, expression in z (e.g. 'relu(z)')")
    p.add_argument("--phi", required=True, help="link function, expression in z (solve: or a multi-index target in z1 .. z9)")
    if eps_required:
        p.add_argument("--eps", type=float, required=True, help=eps_help)
    elif eps_help:
        p.add_argument("--eps", type=float, default=None, help=eps_help)
    p.add_argument("--kmax", type=int, default=6, help="Hermite truncation degree K (default 6)")


def add_solver_args(p):
    p.add_argument("--t-end", type=float, default=5.0, help="final time (default 5)")
    p.add_argument("--points", type=int, default=200, help="log-spaced output times (default %(default)s)")
    p.add_argument("--t-min", type=float, default=None, help="first output time (default eps/100)")
    p.add_argument("--method", default=None,
                   help="Radau (default), BDF or LSODA: implicit, with the generated Jacobian; RK45 is explicit, "
                        "for comparison only: at small eps (1e-6 and below) it takes millions of steps. "
                        "Committees with the relu and quadrature back ends default to LSODA")
    p.add_argument("--rtol", type=float, default=1e-8, help="relative tolerance of the solver (default %(default)g)")
    p.add_argument("--atol", type=float, default=1e-10, help="absolute tolerance of the solver (default %(default)g)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_error_norm_arg(p):
    p.add_argument("--error-norm", default="state", choices=("state", "weighted"),
                   help="state (default): rtol and atol hold for every unknown; weighted: each particle's error "
                        "counts times sqrt(w / max w), so light tail particles are held less tightly than heavy "
                        "ones (moments, risk and learning times stay at the tolerance's level; 2 to 3x fewer "
                        "steps with the default quadrature nodes)")


# result options and the file kinds they take: one rule for every sub-command (docs/conventions.md)
OUTPUT_KINDS = {"out": ".npz", "ode": ".npz", "report": ".json", "plot": "figure", "output": "figure"}


def check_outputs(args):
    """Refuse, before any work, a result path whose suffix does not name its format or where no
    file can be written."""
    from .io import check_figure_path, check_writable

    for dest, kind in OUTPUT_KINDS.items():
        value = getattr(args, dest, None)
        if value is None or (dest == "out" and args.command == "demo"):  # the demo's --out is a folder
            continue
        flag = "--" + dest if dest != "output" else "-o/--output"
        if kind == "figure":
            check_figure_path(value, flag)
        elif not str(value).endswith(kind):
            raise InputError(f"{flag} {value!r} must end in {kind}")
        check_writable(value)


@contextlib.contextmanager
def keep_partial(out, meta: dict):
    """On a failed or interrupted run, write what it computed to OUT.partial.npz (meta ``partial``
    true, the failure message) and name that file in the error."""
    try:
        yield
    except IntegrationError as exc:
        if exc.partial is None or len(exc.partial.t) == 0:
            raise
        out = Path(out)
        exc.partial.meta.update({**meta, "partial": True, "failure": str(exc)})
        where = exc.partial.save(out.with_name(out.name[:-len(".npz")] + ".partial.npz"))
        raise IntegrationError(f"{exc}; what was computed is in {where}", t_fail=exc.t_fail, state=exc.state,
                               partial=exc.partial, interrupted=exc.interrupted) from None


def init_from_args(args):
    from .solve import InitialCondition, initial_condition
    from .io import load_npz

    if args.init:
        arrays, _ = load_npz(args.init, required=("a0", "s0"))
        return InitialCondition(arrays["a0"], arrays["s0"], arrays.get("weights"),
                                description=f"from {args.init}")
    return initial_condition(200 if args.particles is None else args.particles, args.a0 or "normal", args.seed,
                             args.nodes or "quadrature")


def stop_if_out_of_time(traj, args, time_name="t"):
    """The wall-time budget ran out: a partial result, not a result."""
    if traj.stats["status"] == 2:
        raise IntegrationError(f"stopped by --max-wall {args.max_wall:g} s at {time_name} = "
                               f"{traj.stats['t_reached']:.4g} of {args.t_end:g} ({traj.stats['nsteps']} steps)",
                               partial=traj, t_fail=traj.stats["t_reached"])


def refuse_committee_flags(args, model_name: str):
    """The committee's options given to a founding-family model: name them and where they belong."""
    unused = [f for f, v in (("--gamma", args.gamma), ("--lr", args.lr), ("--lr2", args.lr2), ("--noise", args.noise),
                             ("--output", args.output_scaling), ("--dynamics", args.dynamics),
                             ("--backend", args.backend), ("--geometry", args.geometry)) if v is not None]
    if unused:
        raise InputError(f"{', '.join(unused)} {'belongs' if len(unused) == 1 else 'belong'} to --model committee, "
                         f"not to the {model_name}")
    if args.eps is None:
        raise InputError(f"the {model_name} needs --eps (the learning-rate ratio eps > 0)")


def solver_summary(st: dict) -> str:
    return (f"{st['nsteps']} steps, nfev {st['nfev']}, njev {st['njev']}, nlu {st['nlu']}, "
            f"solve {st['solve_seconds']:.2f} s (compile {st['compile_seconds']:.2f} s, "
            f"{'cached' if st['from_cache'] else 'generated'})")


def _cmd_solve(args):
    from .models import kind_for_cli

    if args.points < 2:
        raise InputError(f"--points must be at least 2, got {args.points}")
    model = args.model
    if model == "meanfield" and _is_multi_index(args.phi, args.kmax):
        model = "multi-index"  # the target names z1 .. zM: the mean-field model of M directions
    if args.s0_dim is not None and model != "multi-index":
        raise InputError("--s0-dim is the finite-d start of a multi-index target (phi in z1 .. zM)")
    # options that act on particles, with their non-default values
    particle_options = (("--error-norm", args.error_norm, "state", "weighs"),
                        ("--output-precision", args.output_precision, "float64", "stores"))
    for flag, value, default, verb in particle_options:
        if value != default and model not in ("meanfield", "multi-index"):
            raise InputError(f"{flag} {value} {verb} particles: it belongs to the mean-field models "
                             f"(meanfield, multi-index), not to --model {model}")
    return kind_for_cli(model).solve_command(args)


def _is_multi_index(phi, kmax) -> bool:
    from .symbolic.hermite_cache import load_numbers

    if phi is None or (isinstance(kmax, int) and load_numbers(phi, kmax) is not None):
        return False  # expanded before as a function of z alone: no SymPy to read the target again
    from .symbolic.parse import target_variables

    return bool(target_variables(phi))


def _cmd_plot(args):
    from .io import load_npz
    from .models import kind_of_result

    _, meta = load_npz(args.traj)
    kind_of_result(meta).plot(args.traj, args.output)
    print(f"wrote {args.output}")
    return [(args.output, {})]


def _timescales_multi_index(args):
    from .models.multi_index import MultiIndexModel, direction_sweep, multi_index_start

    model = MultiIndexModel(args.sigma, args.phi, args.kmax, args.eps_list[0])
    init = multi_index_start(args.particles, model.M, args.a0, args.seed, args.nodes)
    stuck = model.invariance_report(init.s0)
    if stuck:
        print("warning: " + stuck, file=sys.stderr if args.json else sys.stdout)
    sweep = direction_sweep(model, args.eps_list, init, args.t_end, method=args.method or "Radau", rtol=args.rtol,
                            atol=args.atol, points=args.points, progress=False if args.quiet else None,
                            error_norm=args.error_norm)
    written = []
    if args.plot:
        sweep.plot(args.plot)
        written.append((args.plot, {"method": args.method or "Radau"}))
    if args.report:
        from .io import write_text_atomic

        written.append((write_text_atomic(args.report, json.dumps(json_safe(sweep.to_dict()), indent=1)), {}))
    if args.json:
        print(json.dumps(json_safe(sweep.to_dict())))
        return written
    print(f"learning time of each direction (first term using it: |r| <= |r(0)|/2), N = {init.N}")
    print(f"{'eps':<10}" + "".join(f"{'z' + str(j + 1):>14}" for j in range(model.M)))
    for e, row in zip(sweep.eps, sweep.times):
        print(f"{e:<10.3g}" + "".join(f"{x:>14.5g}" if np.isfinite(x) else f"{'-':>14}" for x in row))
    print(f"{'slope':<10}" + "".join(f"{x:>14.4f}" if np.isfinite(x) else f"{'-':>14}" for x in sweep.slopes)
          + "   (least squares of log t against log eps)")
    return written


def _cmd_timescales(args):
    import warnings

    from .errors import ResolutionWarning
    from .solve import initial_condition
    from .solve.analysis import predicted_exponent, timescale_sweep
    from .models.meanfield import MeanFieldModel

    eps_list = args.eps_list
    if len(eps_list) < 2:
        raise InputError("--eps-list needs at least two values")
    if _is_multi_index(args.phi, args.kmax):
        return _timescales_multi_index(args)
    model = MeanFieldModel(args.sigma, args.phi, args.kmax, eps_list[0])
    init = initial_condition(args.particles, args.a0, args.seed, args.nodes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResolutionWarning)  # printed below, in the notes
        fit, trajs = timescale_sweep(model, eps_list, init, args.t_end, method=args.method or "Radau",
                                     rtol=args.rtol, atol=args.atol, points=args.points,
                                     error_norm=args.error_norm, check_resolution=not args.no_resolution_check,
                                     progress=False if args.quiet else None)
    written = []
    if args.plot:
        from .solve.plot import plot_sweep

        plot_sweep(fit, trajs, args.plot)
        written.append((args.plot, {"method": args.method or "Radau"}))
    learn = model.learnability(s0_zero=not init.s0.any())
    report = {**fit.to_dict(), "learnability": learn.to_dict(),
              "predicted_slope": [predicted_exponent(k) for k in range(model.K + 1)]}
    if args.report:
        from .io import write_text_atomic

        written.append((write_text_atomic(args.report, json.dumps(json_safe(report), indent=1)), {}))
    if args.json:
        print(json.dumps(json_safe(report)))
        return written
    print(learn.summary())
    degrees = fit.degrees
    if not degrees:
        print("no target degree can be learned: no learning times to measure")
        return
    err_note = (f"± discretisation error |t(N) - t(N/2)| at N = {fit.resolution[0]}" if len(fit.resolution) > 1
                else "no discretisation error estimate")
    print(f"learning time t_k: first time |r_k| <= |r_k(0)|/2; {err_note}; * = phase not separated from a "
          f"neighbour (learning times within a factor 2), left out of the fits")
    w = 24
    print(f"{'eps':<10}" + "".join(f"{'k=' + str(k):>{w}}" for k in degrees))

    def cell(v, e, sep):
        if not np.isfinite(v):
            return f"{'-':>{w}}"
        txt = f"{v:.4g}" + (f" ± {e:.1g}" if np.isfinite(e) else "") + (" " if sep else "*")
        return f"{txt:>{w}}"

    for i, e in enumerate(fit.eps):
        print(f"{e:<10.3g}" + "".join(cell(fit.times[i, k], fit.time_error[i, k], fit.separated[i, k]) for k in degrees))

    def num(v, e=None):
        if not np.isfinite(v):
            return f"{'-':>{w}}"
        txt = f"{v:.4f}" + (f" ± {e:.4f}" if e is not None and np.isfinite(e) else "") + " "
        return f"{txt:>{w}}"

    print(f"{'slope':<10}" + "".join(num(fit.slope[k], fit.slope_error[k]) for k in degrees)
          + "   (least squares over the separated eps)")
    print(f"{'scenario':<10}" + "".join(num(fit.expected[k]) for k in degrees)
          + "   (expected over the same eps: t_1 ~ sqrt(eps) log(1/eps), t_l ~ eps^(1/(2l)))")
    for i in range(fit.local_slope.shape[0]):
        print(f"{'local':<10}" + "".join(num(fit.local_slope[i, k], fit.local_slope_error[i, k]) for k in degrees)
              + f"   (eps {fit.eps[i]:.3g} .. {fit.eps[i + 1]:.3g})")
    if 1 in degrees and np.isfinite(fit.log_corrected_slope[1]):
        print(f"degree 1 with its log factor: slope of t_1/log(1/eps) = {fit.log_corrected_slope[1]:.4f} (scenario 0.5)")
    print("plateaus (risk level ± its discretisation error, nearest level of the report):")
    for e, row in zip(fit.eps, fit.plateaus):
        print(f"  eps = {e:.3g}: " + ("; ".join(
            f"{p.level:.4g}" + (f" ± {p.level_error:.1g}" if np.isfinite(p.level_error) else "")
            + f" over {p.decades:.1f} decades (nearest {p.expected_level:.4g})" for p in row) or "none"))
    if args.a0 == "normal" and any(k >= 2 for k in degrees):
        print("note: for a normal a0 law the late phases are driven by |a0| of 3 to 5 standard deviations and "
              "the degree-l >= 2 slopes approach 1/(2l) only logarithmically in eps; a bounded law "
              "(--a0 uniform) shows the scenario's exponent (README, 'Convergence')")
    for note in fit.notes:
        print(note)
    return written


def _committee_from_args(args, dynamics):
    from .models.committee import CommitteeModel

    return CommitteeModel(args.sigma, args.phi, output=args.output_scaling or "sum", dynamics=dynamics,
                          backend=args.backend or "auto", geometry=args.geometry or "free", kmax=args.kmax)


def _cmd_simulate_committee(args):
    from .simulate.committee import committee_distance, simulate_committee
    from .models.committee import solve_committee

    unused = [f for f, v in (("--eps", args.eps), ("--batch", args.batch), ("--samples", args.samples),
                             ("--steps", args.steps), ("--precision", args.precision),
                             ("--threads", args.threads)) if v is not None]
    if args.algo != "sgd":
        unused.append("--algo " + args.algo)
    if unused:
        raise InputError(f"{', '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply to --model committee "
                         "(online SGD, one sample per step, time alpha = steps/d)")
    if args.lr is None:
        raise InputError("--model committee needs --lr (the first layer's learning rate eta)")
    model = _committee_from_args(args, "sgd")
    alpha_end = 100.0 if args.t_end is None else args.t_end
    out = Path(args.out)
    written, dists = [], []
    for k in range(args.seeds):
        seed = args.seed + k
        path = out if args.seeds == 1 else out.with_name(f"{out.stem}_seed{seed}.npz")
        sim = simulate_committee(model, args.width, args.teacher_width, args.dim, lr=args.lr, lr2=args.lr2 or 0.0,
                                 noise=args.noise, alpha_end=alpha_end, points=args.points, seed=seed,
                                 scale=args.scale)
        own = {"seed": seed, "seeds": 1, "out": str(path), "ode": None}
        sim.meta["values"] = merge_values(args.values, own)
        written.append((sim.save(path), own))
        print(f"{written[-1][0]}: committee SGD K = {args.width}, M = {args.teacher_width}, d = {args.dim}, seed {seed}: "
              f"risk {sim.risk[0]:.4g} -> {sim.risk[-1]:.4g} ({sim.meta['wall_seconds']:.1f} s)")
        if args.ode:
            ode = Path(args.ode)
            ode_path = ode if args.seeds == 1 else ode.with_name(f"{ode.stem}_seed{seed}.npz")
            traj = solve_committee(model, sim.init, alpha_end, lr=args.lr, lr2=args.lr2 or 0.0, noise=args.noise,
                                   t_eval=sim.t, progress=False if args.quiet else None)
            traj.meta.update({"sigma_expr_input": args.sigma, "phi_expr_input": args.phi,
                              "init": f"overlaps of {path} at its start", "values": merge_values(args.values, own)})
            written.append((traj.save(ode_path), own))
            dist = committee_distance(traj, sim)
            dists.append(dist["risk_sup"])
            print(f"{ode_path}: the ODE from the same start; sup |risk_sim - risk_ode| = {dist['risk_sup']:.3g}, "
                  f"largest overlap difference {dist['overlap_sup']:.3g}")
    if len(dists) > 1:
        print(f"sup risk distance over {len(dists)} seeds: mean {np.mean(dists):.3g}, "
              f"standard error {np.std(dists, ddof=1) / np.sqrt(len(dists)):.2g}")
    return written


def _finite_width_odes(args, written, t_end):
    """--model finite-width --ode: the finite-width overlap ODE from each run's own start, at the
    run's gamma = lr d / batch (0 for population gradient flow)."""
    from .simulate import Simulation
    from .solve import InitialCondition
    from .models.finite_width import solve_finite_width

    if args.algo == "gd":
        raise InputError("--model finite-width --ode describes online SGD and gradient flow, not batch GD on "
                         "fixed samples; use --algo sgd or gf")
    out = []
    for path, own in list(written):
        sim = Simulation.load(path)
        gamma = 0.0 if args.algo == "gf" else sim.meta["lr"] * args.dim / args.batch
        init = InitialCondition(sim.a[0], sim.s[0], None, sim.r0, description=f"the start of {path}")
        traj = solve_finite_width(args.sigma, args.phi, init, args.eps, t_end, gamma=gamma, noise=args.noise,
                                  kmax=args.kmax, t_eval=sim.t, progress=False if args.quiet else None)
        ode = Path(args.ode)
        ode_path = ode if args.seeds == 1 else ode.with_name(f"{ode.stem}_seed{own['seed']}.npz")
        traj.meta.update({"sigma_expr_input": args.sigma, "phi_expr_input": args.phi,
                          "values": merge_values(args.values, own)})
        out.append((traj.save(ode_path), own))
        print(f"{ode_path}: finite-width ODE at gamma = {gamma:.3g} from the run's start; sup |risk_sim - risk_ode| "
              f"= {np.max(np.abs(traj.risk - sim.risk)):.3g}")
    return out


def _cmd_simulate(args):
    if args.model == "committee":
        return _cmd_simulate_committee(args)
    unused = [f for f, v in (("--teacher-width", args.teacher_width != 1 or None), ("--lr2", args.lr2),
                             ("--output", args.output_scaling), ("--geometry", args.geometry),
                             ("--backend", args.backend), ("--scale", args.scale)) if v is not None]
    if unused:
        raise InputError(f"{', '.join(unused)} {'belongs' if len(unused) == 1 else 'belong'} to --model committee")
    if args.eps is None:
        raise InputError("the founding network needs --eps (the learning-rate ratio eps > 0)")
    args.batch = 1 if args.batch is None else args.batch
    args.t_end = 5.0 if args.t_end is None else args.t_end
    if args.algo not in ("gf", "sgd", "gd"):
        raise InputError(f"unknown --algo {args.algo!r} (allowed: gf, sgd, gd)")
    if args.seeds < 1:
        raise InputError(f"--seeds must be at least 1, got {args.seeds}")
    kw = dict(sigma=args.sigma, phi=args.phi, eps=args.eps, width=args.width, dim=args.dim,
              kmax=args.kmax, points=args.points, quiet=args.quiet)
    t_end = args.t_end
    if args.algo in ("sgd", "gd"):
        kw.update(lr=args.lr, noise=args.noise)
        if args.steps is not None:
            if args.lr is None:
                raise InputError("--steps needs --lr (t_end = steps * lr)")
            t_end = args.steps * args.lr
        if args.algo == "sgd":
            kw["batch"] = args.batch
            if args.precision is not None:
                kw["precision"] = args.precision
            if args.threads is not None:
                kw["threads"] = args.threads
        else:
            if args.samples is None:
                raise InputError("--algo gd needs --samples N")
            kw["samples"] = args.samples
    multi = _is_multi_index(args.phi, args.kmax)
    for flag, value in (("--precision", args.precision), ("--threads", args.threads)):
        if value is not None and args.algo != "sgd":
            raise InputError(f"{flag} applies to online SGD (--algo sgd), not --algo {args.algo}")
        if value is not None and multi:
            raise InputError(f"{flag} applies to the founding network's online SGD, not to multi-index targets")
    if multi:
        if args.model != "meanfield":
            raise InputError(f"--model {args.model} simulates a target of z; {args.phi!r} is a multi-index target")
        from .simulate.multi_index import simulate_multi_index as simulate
    else:
        from .simulate import simulate
    out = Path(args.out)
    paths, written = [], []
    for k in range(args.seeds):
        seed = args.seed + k
        path = out if args.seeds == 1 else out.with_name(f"{out.stem}_seed{seed}.npz")
        with keep_partial(path, {"seed": seed}):
            sim = simulate(args.algo, seed=seed, t_end=t_end, **kw)
        # each file's values regenerate that file alone: its seed, the resolved step, no ODE
        own = {"seed": seed, "seeds": 1, "out": str(path), "ode": None, "lr": sim.meta.get("lr")}
        sim.meta["values"] = merge_values(args.values, own)
        paths.append(sim.save(path))
        written.append((paths[-1], own))
        print(f"{paths[-1]}: {sim.meta['algo']} m = {args.width}, d = {args.dim}, seed {seed}: risk "
              f"{sim.risk[0]:.4g} -> {sim.risk[-1]:.4g} ({sim.meta['wall_seconds']:.1f} s)")
    if args.ode and args.model == "finite-width":
        return written + _finite_width_odes(args, written, t_end)
    if args.ode and multi:
        from .models.multi_index import MultiIndexModel, multi_index_start
        from .solve import solve

        model = MultiIndexModel(args.sigma, args.phi, args.kmax, args.eps)
        traj = solve(model, multi_index_start(args.particles, model.M), t_end, progress=False if args.quiet else None)
        resolved = {"lr": written[0][1]["lr"] if args.algo != "gf" else None}
        traj.meta.update({"sigma_expr_input": args.sigma, "phi_expr_input": args.phi,
                          "values": merge_values(args.values, resolved)})
        written.append((traj.save(args.ode), resolved))
        print(f"{args.ode}: mean-field ODE, M = {model.M}, N = {args.particles}, risk {traj.risk[0]:.4g} -> "
              f"{traj.risk[-1]:.4g}")
    elif args.ode:
        from .solve import initial_condition, solve
        from .models.meanfield import MeanFieldModel

        model = MeanFieldModel(args.sigma, args.phi, args.kmax, args.eps)
        traj = solve(model, initial_condition(args.particles), t_end, progress=False if args.quiet else None)
        resolved = {"lr": written[0][1]["lr"] if args.algo != "gf" else None}
        traj.meta.update({"sigma_expr_input": args.sigma, "phi_expr_input": args.phi,
                          "values": merge_values(args.values, resolved)})
        ode_path = traj.save(args.ode)
        written.append((ode_path, resolved))
        print(f"{ode_path}: mean-field ODE, N = {args.particles}, risk {traj.risk[0]:.4g} -> {traj.risk[-1]:.4g}")
    return written


def _cmd_compare(args):
    from .io import load_npz, write_text_atomic
    from .simulate import Simulation
    from .simulate.compare import compare, plot_comparison
    from .solve import Trajectory


    kind = load_npz(args.traj)[1].get("model")
    if kind == "committee":
        return _compare_committee(args)
    if kind == "multi-index":
        return _compare_multi_index(args)
    traj = Trajectory.load(args.traj)
    sims = [Simulation.load(p) for p in args.sims]
    cmp = compare(traj, sims)
    report = cmp.to_dict()
    written = []
    if args.report:
        written.append((write_text_atomic(args.report, json.dumps(json_safe(report), indent=1)), {}))
    if args.plot:
        plot_comparison(cmp, args.plot)
        written.append((args.plot, {}))
    print(f"{len(sims)} simulation(s) against the ODE on {cmp.t.size} log-spaced times:")
    print(f"  sup |risk_sim - risk_ode| = {cmp.sup_risk_distance:.4g}")
    print(f"  L2 (log-time)             = {cmp.l2_risk_distance:.4g}")
    print(f"  sliced W1 of (a, s) laws  = {cmp.law_distance:.4g} (final time)")
    degrees = cmp.meta.get("learning_time_degrees", [])
    fmt = lambda x: "never" if not np.isfinite(x) else f"{x:.3g}"
    print("  learning times ODE / simulation: " + (", ".join(
        f"t_{k} = {fmt(cmp.ode_learning_times[k])} / {fmt(cmp.sim_learning_times[k])}" for k in degrees)
        or "none (the ODE learns no target degree)"))
    return written


def _compare_multi_index(args):
    from .io import write_text_atomic
    from .models.multi_index import MultiIndexTrajectory
    from .simulate.multi_index import MultiIndexSimulation, compare_multi_index

    traj = MultiIndexTrajectory.load(args.traj)
    cmp = compare_multi_index(traj, [MultiIndexSimulation.load(p) for p in args.sims])
    written = []
    if args.report:
        written.append((write_text_atomic(args.report, json.dumps(json_safe(cmp.to_dict()), indent=1)), {}))
    if args.plot:
        from .simulate.compare import Comparison, plot_comparison

        nan = np.full(traj.M, np.nan)
        plot_comparison(Comparison(cmp.t, cmp.ode_risk, cmp.sim_risk_mean, np.zeros(cmp.t.size), cmp.sup_risk_distance,
                                   cmp.l2_risk_distance, cmp.law_distance, cmp.law_distance_t, nan, nan, cmp.meta),
                        args.plot)
        written.append((args.plot, {}))
    print(f"{cmp.meta['n_simulations']} simulation(s) against the multi-index ODE (M = {traj.M}) on {cmp.t.size} "
          "log-spaced times:")
    print(f"  sup |risk_sim - risk_ode|     = {cmp.sup_risk_distance:.4g}")
    print(f"  L2 (log-time)                 = {cmp.l2_risk_distance:.4g}")
    print(f"  sliced W1 of (a, s) laws      = {cmp.law_distance:.4g} (final time, in R^{1 + traj.M})")
    return written


def _compare_committee(args):
    from .io import write_text_atomic
    from .simulate.committee import CommitteeSimulation, committee_distance, plot_committee_comparison
    from .models.committee import CommitteeTrajectory

    traj = CommitteeTrajectory.load(args.traj)
    sims = []
    for p in args.sims:
        sim = CommitteeSimulation.load(p)
        if sim.v.shape[1] != traj.v.shape[1] or sim.A.size != traj.A.size:
            raise InputError(f"{p} has K = {sim.v.shape[1]}, M = {sim.A.size}; the trajectory K = {traj.v.shape[1]}, "
                             f"M = {traj.A.size}")
        for key in ("sigma", "phi", "output", "geometry", "lr", "lr2", "noise"):
            if key in sim.meta and key in traj.meta and sim.meta[key] != traj.meta[key]:
                raise InputError(f"{p} was run with {key} = {sim.meta[key]!r}, the trajectory with "
                                 f"{traj.meta[key]!r}: compare like with like")
        sims.append(sim)
    rows = [{"sim": str(p), "seed": s.meta.get("seed"), **committee_distance(traj, s)} for p, s in zip(args.sims, sims)]
    risk = np.array([r["risk_sup"] for r in rows])
    over = np.array([r["overlap_sup"] for r in rows])
    sem = (lambda x: float(np.std(x, ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan"))
    report = {"model": "committee", "per_seed": rows, "risk_sup_mean": float(risk.mean()),
              "risk_sup_standard_error": sem(risk), "overlap_sup_mean": float(over.mean()),
              "overlap_sup_standard_error": sem(over)}
    written = []
    if args.report:
        written.append((write_text_atomic(args.report, json.dumps(json_safe(report), indent=1)), {}))
    if args.plot:
        plot_committee_comparison(traj, sims, args.plot)
        written.append((args.plot, {}))
    print(f"{len(sims)} committee simulation(s) against the ODE (sup over the simulation's times; the ODE's "
          "start should be each run's own overlaps, see simulate --ode):")
    for r in rows:
        print(f"  {r['sim']}: sup |risk| {r['risk_sup']:.4g}, largest overlap difference {r['overlap_sup']:.4g}")
    if len(rows) > 1:
        print(f"  mean: sup |risk| {risk.mean():.4g} ± {sem(risk):.2g}, overlaps {over.mean():.4g} ± {sem(over):.2g}")
    return written


def _cmd_demo(args):
    from .demo import run_demo

    run_demo(args)
    return [(args.out, {})]


def model_kinds() -> list:
    from .models import cli_names

    return cli_names()


def register(sub):
    s = sub.add_parser("solve", help="integrate the mean-field dynamics, or a committee machine's overlaps")
    s.add_argument("--model", default="meanfield", choices=model_kinds(),
                   help="meanfield (default): the founding model's particles, or with --phi in z1 .. zM the "
                        "multi-index model (s saved with shape (T, N, M)); committee: K-unit student, "
                        "M-unit teacher, online SGD at a finite learning rate (see --lr); finite-width: the "
                        "founding model's m neurons (--init with a0, s0, r0), at SGD rate --gamma")
    add_model_args(s, eps_required=False, eps_help="learning-rate ratio eps > 0 (mean-field model, required there)")
    g = s.add_argument_group("initial condition (s0 = 0 and a0 from a law, or a file)")
    g.add_argument("--init", default=None, help="FILE.npz with arrays a0, s0 (optional weights; s0 (N, M) for a "
                                                "multi-index target); for --model "
                                                "committee: Q (K, K), R (K, M), T (M, M), v (K,), A (M,); for "
                                                "--model finite-width: a0 (m,), s0 (m,), r0 (m, m)")
    g.add_argument("--particles", type=int, default=None, help="number of particles N (default 200)")
    g.add_argument("--a0", default=None, help="law of a0: normal (default), uniform, rademacher")
    g.add_argument("--seed", type=int, default=None, help="sample a0 with this seed (default: quadrature nodes)")
    g.add_argument("--nodes", default=None,
                   help="how a0's law becomes particles: quadrature (default: weighted nodes covering the tails) "
                        "or quantiles (equal weights, slow to converge in N)")
    g.add_argument("--s0-dim", type=int, default=None,
                   help="multi-index targets: start from s0 ~ N(0, 1/d) per coordinate, the alignment of a random "
                        "unit vector in dimension d (default: s0 = 0); seeded by --seed (default 0)")
    c = s.add_argument_group("committee model (--model committee; time alpha = steps/d)")
    c.add_argument("--lr", type=float, default=None, help="first-layer learning rate eta (required)")
    c.add_argument("--lr2", type=float, default=None, help="second-layer learning rate (default 0: fixed)")
    c.add_argument("--noise", type=float, default=None, help="label noise standard deviation (default 0)")
    c.add_argument("--output", dest="output_scaling", default=None, choices=("sum", "mean"),
                   help="output scaling of student and teacher: sum (default, Saad-Solla) or mean")
    c.add_argument("--dynamics", default=None, choices=("sgd", "gf"),
                   help="sgd (default: online SGD at the finite rate, eta^2 terms included) or gf (gradient flow)")
    c.add_argument("--backend", default=None, choices=BACKEND_CHOICES,
                   help="Gaussian expectations: erf closed forms, exact polynomial moments, relu arc-cosine "
                        "kernels and orthant moments, Hermite series to degree --kmax (sphere only, any "
                        "activation), quadrature (any activation, free or sphere; slower), or auto "
                        "(default: exact where possible)")
    c.add_argument("--geometry", default=None, choices=("free", "sphere"),
                   help="first-layer weights free (default) or on the unit sphere (renormalised each step)")
    c.add_argument("--gamma", type=float, default=None,
                   help="--model finite-width: SGD rate gamma = lr d (default 0: gradient flow)")
    add_solver_args(s)
    s.set_defaults(t_end=None)
    s.add_argument("--max-wall", type=float, default=3600.0,
                   help="stop after this many seconds of solving and keep what was computed in FILE.partial.npz "
                        "(default %(default)g)")
    s.add_argument("--threads", type=int, default=1,
                   help="threads for the structured Radau's passes over the particles (default 1). They pay at "
                        "large N on a quiet machine (1.2 to 1.4x at N = 1e4 to 1e5 on 2 cores) and cost several "
                        "times over next to other work")
    add_error_norm_arg(s)
    s.add_argument("--output-precision", default="float64", choices=("float64", "float32"),
                   help="float64 (default) or float32: the particles' a and s at the output times in single "
                        "precision, half the output's memory and file (moments, residuals and risk stay float64, "
                        "taken from the solver's state)")
    s.add_argument("--out", required=True, help="output trajectory FILE.npz")
    s.set_defaults(func=_cmd_solve)

    p = sub.add_parser("plot", help="plot a saved trajectory")
    p.add_argument("traj", help="trajectory .npz written by 'odehild solve'")
    p.add_argument("-o", "--output", required=True, help="figure file (.png, .pdf, .svg)")
    p.set_defaults(func=_cmd_plot)

    t = sub.add_parser("timescales", help="per-degree learning times over an eps sweep, with fitted exponents")
    add_model_args(t, eps_required=False)
    t.add_argument("--eps-list", type=float, nargs="+", required=True, help="values of eps")
    t.add_argument("--particles", type=int, default=200, help="particles N (default 200); N/2 gives the error estimate")
    t.add_argument("--a0", default="normal", help="law of a0: normal (default), uniform, rademacher")
    t.add_argument("--seed", type=int, default=None, help="sample a0 with this seed (default: quadrature nodes)")
    t.add_argument("--nodes", default="quadrature",
                   help="how a0's law becomes particles: quadrature (default) or quantiles")
    t.add_argument("--no-resolution-check", action="store_true",
                   help="skip the second run at N/2 that estimates the discretisation error")
    add_solver_args(t)
    add_error_norm_arg(t)
    t.set_defaults(points=2000)
    t.add_argument("--json", action="store_true", help="print one JSON object on stdout (messages go to stderr)")
    t.add_argument("--plot", default=None, help="write the sweep figure here (FILE.png, .pdf, .svg, ...)")
    t.add_argument("--report", default=None, help="write the fit and learning times here (FILE.json)")
    t.set_defaults(func=_cmd_timescales)

    m = sub.add_parser("simulate", help="train finite networks (gradient flow, online SGD, batch GD)")
    m.add_argument("--model", default="meanfield", choices=("meanfield", "finite-width", "committee"),
                   help="meanfield (default) and finite-width train the founding network and differ in the ODE "
                        "that --ode solves; committee trains a K-unit student on an M-unit teacher by online SGD")
    add_model_args(m, eps_required=False, eps_help="learning-rate ratio eps > 0 (founding network, required there)")
    m.add_argument("--width", type=int, required=True, help="number of hidden units m (committee: K)")
    m.add_argument("--teacher-width", type=int, default=1, help="committee: teacher units M (default 1)")
    m.add_argument("--dim", type=int, required=True, help="input dimension d")
    m.add_argument("--algo", default="sgd", help="gf (population gradient flow), sgd (online), gd (full batch)")
    m.add_argument("--lr", type=float, default=None, help="step size (sgd default 0.01/d, gd 0.05 eps)")
    m.add_argument("--batch", type=int, default=None, help="mini-batch size for sgd (default 1)")
    m.add_argument("--precision", default=None, choices=("float64", "float32"),
                   help="storage of the first-layer weights in online SGD of the founding network (default "
                        "float64; float32 halves the memory traffic at large m d, the update stays in double)")
    m.add_argument("--threads", type=int, default=None,
                   help="threads for online SGD of the founding network (default 1): each one-sample step's pass "
                        "over the weights split across them, with --batch > 1 the BLAS threads of its GEMMs; "
                        "1.4x to 1.9x at m d >= 1e6 on a quiet 2-core machine, a loss next to other work")
    m.add_argument("--samples", type=int, default=None, help="number of fixed samples for gd")
    m.add_argument("--noise", type=float, default=0.0, help="label noise standard deviation (default 0)")
    m.add_argument("--t-end", type=float, default=None,
                   help="final time in the ODE's unit, t = step * lr (default 5); committee: alpha = steps/d "
                        "(default 100)")
    m.add_argument("--steps", type=int, default=None, help="number of steps instead of --t-end")
    m.add_argument("--seed", type=int, default=0, help="random seed of the initial weights and the samples (default 0)")
    m.add_argument("--seeds", type=int, default=1,
                   help="run seeds seed..seed+S-1; with S > 1 --out SIM.npz becomes SIM_seedK.npz (default 1)")
    m.add_argument("--points", type=int, default=60,
                   help="log-spaced times at which the state is recorded; never changes the training (default 60)")
    m.add_argument("--ode", default=None,
                   help="also solve the matching ODE into this FILE.npz: the mean-field ODE, or with --model "
                        "finite-width / committee the overlap ODE from each run's own start and learning rate "
                        "(one file per seed)")
    cm = m.add_argument_group("committee network (--model committee)")
    cm.add_argument("--lr2", type=float, default=None, help="second-layer learning rate (default 0: fixed)")
    cm.add_argument("--output", dest="output_scaling", default=None, choices=("sum", "mean"),
                    help="output scaling: sum (default) or mean")
    cm.add_argument("--geometry", default=None, choices=("free", "sphere"), help="first-layer weights (default free)")
    cm.add_argument("--backend", default=None, choices=BACKEND_CHOICES,
                    help="expectation back end of the risk and of --ode (default auto)")
    cm.add_argument("--scale", type=float, default=None,
                    help="standard deviation of the initial student weights, free geometry (default 0.5)")
    m.add_argument("--particles", type=int, default=400, help="ODE particles for --ode (default 400)")
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    m.add_argument("--out", required=True, help="output SIM.npz")
    m.set_defaults(func=_cmd_simulate)

    c = sub.add_parser("compare", help="distance between an ODE trajectory and simulations")
    c.add_argument("traj", help="trajectory .npz")
    c.add_argument("sims", nargs="+", help="simulation .npz files (seeds of one configuration)")
    c.add_argument("--report", default=None, help="write the report here (FILE.json)")
    c.add_argument("--plot", default=None, help="write the comparison figure here (FILE.png, .pdf, .svg, ...)")
    c.set_defaults(func=_cmd_compare)

    d = sub.add_parser("demo", help="the main job on built-in defaults")
    d.add_argument("--out", default="odehild-out", help="output folder (default ./odehild-out)")
    d.add_argument("--quick", action="store_true", help="small sizes (for tests)")
    d.add_argument("--quiet", action="store_true", help="no progress messages")
    d.set_defaults(func=_cmd_demo)

    w = sub.add_parser("sweep", help="run a grid of solve / simulate / timescales runs on Dask into a result store",
                       description="Run every combination a sweep file describes (a base run as for 'odehild "
                                   "run', a [grid] of lists crossed, optional [[points]], optional [sweep] "
                                   "settings) as Dask tasks, by default on a local cluster of one single-threaded "
                                   "worker per core. Results go to a store folder, one file per run named by "
                                   "the hash of its configuration, with an index; running the same file again "
                                   "resumes. Details: docs/sweeps.md.")
    w.add_argument("file", help="sweep FILE.toml")
    w.add_argument("--dry-run", action="store_true", help="print the resolved runs and their count, run nothing")
    w.add_argument("--summary", action="store_true", help="summarize the store (table and figures), run nothing")
    w.add_argument("--store", default=None, help="result folder (default: [sweep] store, else FILE-store next to FILE)")
    w.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler (tcp://host:8786)")
    w.add_argument("--workers", type=int, default=None,
                   help="local worker processes (default: [sweep] workers, else one per core; 0: in this process)")
    w.add_argument("--retry-failed", action="store_true", help="run again the runs recorded as failed")
    w.add_argument("--quiet", action="store_true", help="no progress bar")
    w.set_defaults(func=_cmd_sweep)

    rp = sub.add_parser("report", help="summarize a sweep's result store: table and figures per swept parameter")
    rp.add_argument("store", help="the store folder of a sweep")
    rp.add_argument("--figures", default=None, help="folder for the figures (default STORE/summary)")
    rp.set_defaults(func=_cmd_report)


def _cmd_sweep(args):
    from .sweep import load_sweep, run_sweep

    if args.workers is not None and args.workers < 0:
        raise InputError(f"--workers must be 0 (in this process) or more, got {args.workers}")
    sweep = load_sweep(args.file, store=args.store, scheduler=args.scheduler, workers=args.workers)
    if args.dry_run:
        from .sweep.spec import resolved_argv

        for run in sweep.runs:
            params = ", ".join(f"{k} = {v!r}" for k, v in run.params.items())
            print(f"{run.key}  {params}")
            print("    odehild " + shlex.join(resolved_argv(run.config, sweep.command, sweep.store / "runs" / run.key)))
        print(f"{len(sweep.runs)} runs of '{sweep.command}' into {sweep.store}")
        return
    if not args.summary:
        engine = (f"Dask scheduler {sweep.scheduler}" if sweep.scheduler else
                  "this process" if sweep.workers == 0 else
                  f"a local Dask cluster of {sweep.workers or os.cpu_count()} single-threaded workers")
        print(f"{len(sweep.runs)} runs of '{sweep.command}' into {sweep.store} on {engine}", file=sys.stderr)
        rows = run_sweep(sweep, retry_failed=args.retry_failed, progress=False if args.quiet else None)
        done = sum(r["status"] == "done" for r in rows)
        failed = [r for r in rows if r["status"] == "failed"]
        print(f"{done} done, {len(failed)} failed; index: {sweep.store / 'index.csv'}")
        for r in failed:
            print(f"  failed {r['key']} ({', '.join(f'{k} = {r.get(k)!r}' for k in sweep.swept)}): {r['message']}")
        if failed and not args.retry_failed:
            print("  (run again with --retry-failed to retry them)")
        return
    _print_summary(sweep.store, None)


def _cmd_report(args):
    _print_summary(args.store, args.figures)


def _print_summary(store, figures):
    from .sweep import summarize

    text, paths = summarize(store, figures)
    print(text)
    for p in paths:
        print(f"figure: {p}")
