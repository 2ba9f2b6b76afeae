"""Command line: ``odehild <sub-command>`` (contract in docs/conventions.md).

Exit codes: 0 success, 2 bad input (one-line message on stderr), 1 numerical failure.
"""

from __future__ import annotations

import argparse
import sys

from .errors import IntegrationError, OdehildError


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _cmd_hermite(args):
    from .symbolic import hermite
    from .symbolic.parse import target_variables

    if target_variables(args.expr):
        return _hermite_multi(args)
    h = hermite(args.expr, args.kmax)
    if args.json:
        print(h.to_json())
        return
    print(f"Hermite coefficients c_k = E[f(G) He_k(G)]/sqrt(k!) of f(z) = {h.expression}")
    print(f"{'k':>3}  {'c_k':>22}  exact")
    for k, (c, e) in enumerate(zip(h.coefficients, h.exact)):
        print(f"{k:>3}  {c:>22.15g}  {'' if e is None else e}")
    exact = "exact" if h.norm2_exact is not None else "quadrature"
    print(f"norm2 = E[f^2] = {h.norm2:.15g} ({exact})")
    print(f"tail  = norm2 - sum c_k^2 = {h.tail:.6g}")
    print(f"information exponent: {h.information_exponent}")
    if not all(e is not None for e in h.exact):
        print(f"numeric coefficients: max error bound {h.errors.max():.2g}")


def _hermite_multi(args):
    from .symbolic.multi_hermite import learning_order, monomial_name, multi_hermite

    h = multi_hermite(args.expr, args.kmax)
    if args.json:
        import json

        print(json.dumps(h.to_dict()))
        return
    print(f"Hermite coefficients phi_alpha = E[f(z) h_alpha(z)], h_alpha = prod_j He_(alpha_j)(z_j)/sqrt(alpha_j!), "
          f"of f = {h.expression} (M = {h.M} directions, |alpha| <= {h.kmax}; zero terms omitted)")
    print(f"{'alpha':>14}  {'term':>18}  {'phi_alpha':>22}  exact")
    for alpha, c, e, err in zip(h.multi_indices, h.coefficients, h.exact, h.errors):
        if alpha in h.support:
            print(f"{str(alpha):>14}  {monomial_name(alpha):>18}  {c:>22.15g}  {'' if e is None else e}")
    print(f"norm2 = E[f^2] = {h.norm2:.15g} ({h.method})")
    print(f"tail  = norm2 - sum phi_alpha^2 = {h.tail:.6g}")
    order = " then ".join("{" + ", ".join(f"z{j + 1}" for j in step) + "}" for step in learning_order(h.support))
    print(f"leap complexity: {h.leap} (directions learned in the order {order or 'none'})")
    if h.method == "quadrature" or h.errors.max() > 0:
        print(f"numeric coefficients: max error bound {h.errors.max():.2g}")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="odehild", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"odehild {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    h = sub.add_parser("hermite", help="normalized Hermite coefficients of an expression in z (or z1 .. z9)")
    h.add_argument("expr", help="function of z, e.g. 'relu(z)' or 'h(1,z)+h(2,z)'; or a multi-index target in "
                                "z1 .. z9, e.g. 'z1 + z1*z2' (JSON gains multi_indices)")
    h.add_argument("--kmax", type=int, default=8, help="largest degree K (default 8)")
    h.add_argument("--json", action="store_true", help="print one JSON object")
    h.set_defaults(func=_cmd_hermite)

    from . import commands

    commands.register(sub)
    r = sub.add_parser("run", help="run the command described by a TOML config file",
                       description="Run the sub-command a TOML file describes. The file holds 'command' (one "
                                   "of hermite, solve, plot, timescales, simulate, compare, demo) and that "
                                   "command's options, spelled as on its command line without the dashes "
                                   "(t-end or t_end). Every run writes such a file next to its results "
                                   "(FILE.toml for FILE): 'odehild run FILE.toml' regenerates FILE. "
                                   "Details: docs/conventions.md.",
                       epilog='example:\n  command = "solve"\n  sigma = "relu(z)"\n  phi = "h(1,z)+h(2,z)"\n'
                              '  eps = 1e-6\n  out = "run.npz"',
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("config", help="FILE.toml, or a result FILE.npz (the values in its meta)")
    p.subcommands = sub.choices
    return p


EXPRESSION_OPTIONS = ("--sigma", "--phi")


def protect_expressions(argv: list) -> list:
    """Expressions may start with '-' ('-h(1,z)', '-z'); argparse would read them as options."""
    out, i = [], 0
    while i < len(argv):
        tok = argv[i]
        if tok in EXPRESSION_OPTIONS and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{tok}={argv[i + 1]}")
            i += 2
            continue
        out.append(tok)
        i += 1
    if out[:1] == ["hermite"] and "--" not in out:
        known, rest, expr = {"--kmax", "--json", "-h", "--help"}, [], []
        j = 1
        while j < len(out):
            tok = out[j]
            if tok == "--kmax" and j + 1 < len(out):
                rest += out[j:j + 2]
                j += 2
                continue
            (rest if tok in known or tok.startswith("--kmax=") else expr).append(tok)
            j += 1
        if any(e.startswith("-") for e in expr):
            out = ["hermite", *rest, "--", *expr]
    return out


def _parse(parser, argv):
    """Parsed arguments; ``odehild run FILE`` is replaced by the command its file describes."""
    from .config import config_to_argv, load_config

    argv = protect_expressions(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    if args.command != "run":
        return args
    argv = config_to_argv(load_config(args.config), parser.subcommands)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    from .commands import check_outputs
    from .config import used_config, write_used_config

    import warnings

    # warnings reach the user as one line on stderr, when they happen
    warnings.formatwarning = lambda message, category, *rest, **kw: f"warning: {message}\n"
    parser = build_parser()
    args = None
    try:
        args = _parse(parser, argv)
        check_outputs(args)
        args.values = used_config(args, parser.subcommands[args.command])  # stored in result files
        # machine output (--json) alone goes to stdout; messages go to stderr
        for result, overrides in args.func(args) or []:
            path = write_used_config(args, parser.subcommands[args.command], result, overrides)
            if not getattr(args, "quiet", False):
                print(f"values used: {path}", file=sys.stderr)
    except IntegrationError as exc:
        if exc.interrupted:  # Ctrl-C inside the solver: exit 130 like any interrupt, partial kept
            print(f"odehild {args.command}: interrupted: {exc}", file=sys.stderr)
            return 130
        print(f"odehild {args.command}: integration failed: {exc}", file=sys.stderr)
        return 1
    except OdehildError as exc:
        print(f"odehild {args.command if args else 'run'}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"odehild {args.command if args else 'run'}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `odehild ... | head`: the reader left; say nothing more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


def console(argv=None):
    """Entry point of the ``odehild`` script and ``python -m odehild``: :func:`main`, then an exit
    that skips the interpreter's teardown of Numba's and LLVM's objects (0.3 s of a 1.4 s warm
    solve). Exit handlers still run and output is flushed; with non-daemon threads alive the exit
    is the normal one, which waits for them."""
    import atexit
    import os
    import threading

    code = main(argv)
    # Python waits for non-daemon threads at exit (a cluster not yet closed); daemon ones it would
    # kill anyway (tqdm's monitor)
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # a reader gone, or a stream a handler closed
            pass
    os._exit(code)


if __name__ == "__main__":
    console()
