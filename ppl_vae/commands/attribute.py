"""``ppl-vae attribute``: latent attribute vectors.

direction = mean posterior-mean code of the *training* examples with the attribute (class label
== ``--attribute``) minus that of those without; ``--split`` examples without the attribute are
decoded at z + alpha * direction for each alpha (one row per example). ``--json`` also reports,
per alpha, the fraction of decoded images that a 5-nearest-neighbour classifier fitted on the
training pixels assigns to the attribute's class
(:func:`ppl_vae.analysis.representation.label_rate`) (a figure to compare: it should rise with
alpha).
"""

from __future__ import annotations

from ppl_vae.commands import options as tk

NAME = "attribute"
HELP = "decode z + alpha * (mean code with a label - mean code without) for a row of alphas (PNG)"


def add_arguments(p):
    tk.add_common(p, json_flag=True, num=8,
                  num_help="number of examples without the attribute to move")
    p.add_argument("--attribute", type=int, required=True, metavar="LABEL",
                   help="class label that defines the attribute (digits: 0..9)")
    p.add_argument("--alphas", default="0,0.25,0.5,0.75,1,1.25,1.5", metavar="A,B,...",
                   help="multiples of the direction (default 0,0.25,...,1.5)")


def run(args) -> int:
    import torch

    from ppl_vae.analysis.generation import apply_attribute, attribute_direction
    from ppl_vae.analysis.representation import label_rate
    from ppl_vae.errors import ConfigError, DataError
    from ppl_vae.io.plots import save_image_grid

    n = tk.positive(args.num, "--num")
    alphas = tk.float_list(args.alphas, "--alphas")
    out = tk.out_png(args.out)
    r, device = tk.load(args)
    ds = r.dataset
    y_train = ds.labels_for("train")
    y = ds.labels_for(args.split)
    known = sorted(set(y_train.tolist()))
    if args.attribute not in known:
        raise ConfigError(f"unknown attribute {args.attribute}: the labels of {ds.name} are "
                          f"{known[0]}..{known[-1]}" if len(known) > 1 else
                          f"unknown attribute {args.attribute}")
    x_train = r.split("train").to(device)
    direction = attribute_direction(r.guide, x_train, y_train == args.attribute)
    x = tk.data(r, args, device)
    idx = torch.nonzero(y != args.attribute).squeeze(-1)[:n]
    if idx.numel() == 0:
        raise DataError(f"no {args.split} example without attribute {args.attribute}")
    imgs = apply_attribute(r.model, r.guide, x[idx], direction, alphas)
    print(save_image_grid(imgs.reshape(-1, imgs.shape[-1]).cpu(), ds.image_shape, out,
                          ncol=len(alphas),
                          title=f"z + alpha * d(label {args.attribute}), alpha = "
                                + ", ".join(f"{a:g}" for a in alphas)),
          file=__import__("sys").stderr if args.json else None)
    if args.json:
        rate = [label_rate(imgs[:, k].cpu(), ds.train, y_train, args.attribute)
                for k in range(len(alphas))]
        tk.emit_json({
            "attribute": args.attribute, "split": args.split, "direction_split": "train",
            "num_examples": int(idx.numel()),
            "num_with": int((y_train == args.attribute).sum()),
            "num_without": int((y_train != args.attribute).sum()),
            "direction_norm": {k: float(v.norm()) for k, v in direction.items()},
            "alphas": alphas, "target_rate": rate, "out": str(out)})
    return 0
