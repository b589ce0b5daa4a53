"""The ``gdlab`` command: a thin layer over the library.

Every subcommand calls a public function of gdlab, so the same work can be done
from a script or a notebook.  Bad input ends with exit code 2 and one line on
standard error that says what is wrong and what is allowed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


class UsageError(Exception):
  """Bad input from the command line: reported in one line, exit code 2."""


def _csv(text: str) -> list[str]:
  return [t.strip() for t in text.split(",") if t.strip()]


def _cmd_check_grads(args) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_enable_x64", True)
  from gdlab import activations, gradcheck, losses, models  # pylint: disable=g-import-not-at-top
  from gdlab import _checks  # pylint: disable=g-import-not-at-top
  acts = _csv(args.activations) if args.activations else activations.names()
  loss_names = _csv(args.losses) if args.losses else losses.names()
  biases = _csv(args.biases) if args.biases else models.BIAS_ARRANGEMENTS
  for a in acts:
    _checks.check_choice("--activations", a, activations.names())
  for l in loss_names:
    _checks.check_choice("--losses", l, losses.names())
  for b in biases:
    _checks.check_choice("--biases", b, models.BIAS_ARRANGEMENTS)
  try:
    depths = [int(d) for d in _csv(args.depths)]
  except ValueError as e:
    raise UsageError(f"--depths: expected comma-separated integers; got "
                     f"{args.depths!r}.") from e
  reductions = _csv(args.reductions)
  for r in reductions:
    _checks.check_choice("--reductions", r, losses.REDUCTIONS)
  rows = gradcheck.grid(acts, loss_names, biases, depths, reductions,
                        seed=args.seed)
  print("Hand-written backpropagation against jax.grad and central finite "
        "differences (float64;")
  print(f"pass: relative error <= {gradcheck.AUTODIFF_TOL:g} against "
        f"jax.grad and <= {gradcheck.FD_TOL:g} against finite differences).")
  print(gradcheck.format_table(rows))
  return 0 if all(r.passed for r in rows) else 1


def _cmd_devices(args) -> int:
  del args
  import jax  # pylint: disable=g-import-not-at-top
  print(f"jax {jax.__version__}, default backend: {jax.default_backend()}")
  for d in jax.devices():
    print(f"  {d.id}: {d.platform} {d.device_kind}")
  return 0


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="gdlab",
      description="Study how gradient descent and backpropagation train "
      "models.")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")

  p = sub.add_parser(
      "check-grads",
      help="compare the hand-written backpropagation with jax.grad and "
      "finite differences",
      description="Print a table over activations x losses x bias "
      "arrangements x depths with the largest relative error of the "
      "hand-written gradient against jax.grad and against central finite "
      "differences, in float64. Exits 1 if any row fails.")
  p.add_argument("--activations", help="comma-separated names (default: all)")
  p.add_argument("--losses", help="comma-separated names (default: all)")
  p.add_argument("--biases", help="comma-separated bias arrangements "
                 "(default: all)")
  p.add_argument("--depths", default="0,1,3",
                 help="numbers of hidden layers (default: 0,1,3)")
  p.add_argument("--reductions", default="mean",
                 help="mean and/or sum (default: mean)")
  p.add_argument("--seed", type=int, default=0)
  p.set_defaults(fn=_cmd_check_grads)

  p = sub.add_parser("devices", help="list the devices JAX sees")
  p.set_defaults(fn=_cmd_devices)

  p = sub.add_parser("demo", help="run the default job (the gradient check)")
  p.set_defaults(fn=_cmd_check_grads, activations=None, losses=None,
                 biases=None, depths="0,1,3", reductions="mean", seed=0)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if not getattr(args, "fn", None):
    parser.print_help()
    return 2
  try:
    return args.fn(args)
  except (UsageError, ValueError, TypeError) as e:
    print(f"gdlab {args.command}: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
