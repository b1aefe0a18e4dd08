"""``invertible encode RUN --out Z.npy``: the latents ``z = f(x)`` of rows of data under a trained flow.

The rows are those ``invertible eval`` scores: by default the test split of
the run's own dataset; --data names another dataset or a file (a file other
than the run's: every row, in file order), and --split, --seed and -d choose
as they do for eval. They are mapped into the model's space by the run's own
preprocessing (a table standardised with the statistics of the run's training
split; images dequantized with seeded noise, that of eval's first draw, and
logit-mapped), then through the flow. --out gets one latent per row, in the
order read, of the flow's event shape (a .csv row: the latent flattened).
`invertible decode RUN --latents Z.npy` maps latents back to data. A
conditional flow encodes each row under its own context (its class label, or
its context columns): decode them under the same one.
"""

from __future__ import annotations

import argparse
import sys

from ..persistence import load
from ..train.distributed import resolve_device
from ..train.evaluate import row_latents
from ._common import check_array_path, check_latent_space, check_not_an_input, existing_run, save_array
from ._rows import add_row_flags, check_row_flags, selected_rows


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("encode", help="map rows of data to the latents of a trained flow",
                              description=__doc__.replace("``", ""))
    p.add_argument("run", metavar="RUN", help="run directory (or a directory written by flow.save)")
    p.add_argument("--out", required=True, help="output file of the latents: .npy or .csv")
    add_row_flags(p)
    p.add_argument("--batch-size", type=int, default=1024, help="rows encoded at a time (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.set_defaults(command=run)


def run(args: argparse.Namespace) -> int:
    check_row_flags(args, "encode")
    check_array_path(args.out)
    run_dir = existing_run(args.run)
    device = resolve_device(args.device)
    flow = load(run_dir, map_location=device)
    check_latent_space(flow, run_dir)
    rows = selected_rows(flow, args, run_dir)
    check_not_an_input(args.out, {"the --data file" if args.data else "the run's data file": args.data or rows.name})
    z = row_latents(flow, rows.data, rows.context, rows.preprocess, rows.raw, args.batch_size, device)
    save_array(args.out, z.numpy())
    print(f"wrote the latents of {len(z)} rows ({rows.described()}), each of shape {tuple(flow.event_shape)}, "
          f"to {args.out}", file=sys.stderr)
    if rows.context is not None:
        print("note: each row was encoded under its own context; decode the latents under the same contexts "
              "(`invertible decode --context FILE.npy`, or --label K for rows of class K)", file=sys.stderr)
    return 0
