"""Why does a merge of two independently trained models fail? The diagnostics behind
docs/results.md "Merging two ViTs" (they work for any pair weightlab can trace).

    python scripts/merge_diagnostics.py A.safetensors B.safetensors [--seeds 5] [--samples 1000]

Prints, on the test split of the checkpoints' dataset:

1. the endpoints and the naive midpoint;
2. weight matching with ``--seeds`` visiting orders: midpoint accuracy, the objective
   Σ⟨W_A, P(W_B)⟩ and a check that the permuted B computes B's function (max |Δ logits|);
3. activation matching (inner product, correlation): midpoint and the weight-matching objective
   its permutation reaches (a feasible point of the same maximisation);
4. per free space, the mean Pearson correlation of matched features, corr(A_i, B_π(i)), under
   each matcher's permutation: how much the permutation lines up what the models compute;
5. per weight tensor, cos(W, W₀): how much of each trained tensor is still its random
   initialization W₀ (rebuilt from the seed in the checkpoint's provenance, as the trainer
   builds it: ``torch.manual_seed(seed)`` then the architecture). Weight matching compares
   W_A with W_B, so where both are mostly independent random initializations it matches noise.
"""

from __future__ import annotations

import argparse
import os

import torch


def main() -> None:
    from weightlab import checkpoint as ckpt_io
    from weightlab import plugins
    from weightlab.data.bundle import load_data
    from weightlab.graph import trace
    from weightlab.interpolation import average_states, with_state
    from weightlab.matching.activation import activation_matching
    from weightlab.matching.features import collect_feature_stats
    from weightlab.matching.weight import weight_matching, weight_objective
    from weightlab.metrics import evaluate

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--seeds", type=int, default=5, help="weight matching visiting orders")
    ap.add_argument("--samples", type=int, default=1000, help="calibration images")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    a, ck_a = ckpt_io.load_model(args.a)
    b, ck_b = ckpt_io.load_model(args.b)
    bundle = load_data(ck_a.data["name"], data_dir=os.environ.get("WEIGHTLAB_DATA"))
    test = bundle.loader("test", batch_size=1000)
    calib = bundle.loader("calibration", batch_size=500, num_samples=args.samples)
    graph = trace(a, next(iter(test))[0][:2])
    sa, sb = a.state_dict(), b.state_dict()

    def midpoint(state_b: dict) -> float:
        return 100 * evaluate(with_state(a, average_states([sa, state_b], [0.5, 0.5])),
                              test)["top1"]

    x = next(iter(test))[0][:256]
    acc = [100 * evaluate(m, test)["top1"] for m in (a, b)]
    print(f"endpoints {acc[0]:.1f} % / {acc[1]:.1f} %")
    print(f"naive midpoint {midpoint(sb):.1f} %   objective {weight_objective(graph, sa, sb):.2f}")
    perms = {}
    for seed in range(args.seeds):
        al = weight_matching(graph, sa, sb, seed=seed)
        pb = al.apply(graph, sb)
        with torch.no_grad():
            err = float((with_state(b, pb)(x) - b(x)).abs().max())
        perms[f"weight s{seed}"] = al
        print(f"weight matching, seed {seed}: midpoint {midpoint(pb):.1f} %   objective "
              f"{al.info['objective']:.2f} ({al.info['sweeps']} sweeps)   permuted B: max "
              f"|Δ logits| {err:.1e}")
    for sim in ("inner", "correlation"):
        al = activation_matching(graph, a, b, calib, similarity=sim)
        pb = al.apply(graph, sb)
        perms[f"act {sim[:5]}"] = al
        print(f"activation matching ({sim}): midpoint {midpoint(pb):.1f} %   weight-matching "
              f"objective of its permutation {weight_objective(graph, sa, pb):.2f}")

    stats = collect_feature_stats([a, b], graph, calib, None)
    print("\nmean corr(A_i, B_π(i)) of matched features per space:", "  ".join(perms))
    for sid, st in stats.items():
        c = st.block(0, 1, "corr")
        rows = torch.arange(c.shape[0])
        s = graph[sid]
        vals = "  ".join(f"{float(c[rows, al.perms[sid]].mean()):+.2f}" for al in perms.values())
        print(f"  space {sid} ({s.size} channels{f', {s.groups} heads' if s.groups > 1 else ''})"
              f": {vals}")

    print("\ncos(W, W₀) of each trained weight matrix with its initialization (A / B):")
    inits = []
    for ck in (ck_a, ck_b):
        torch.manual_seed(int(ck.provenance["seed"]))
        comp = plugins.registry().create("models", ck.model["name"], ck.model.get("params"))
        inits.append(comp.build(tuple(ck.model["input_shape"]),
                                int(ck.model["num_classes"])).state_dict())
    for key, w in sa.items():
        if w.dim() >= 2 and float(inits[0][key].norm()) > 0:
            cos = [float(torch.nn.functional.cosine_similarity(s[key].flatten(),
                                                               i[key].flatten(), dim=0))
                   for s, i in zip((sa, sb), inits)]
            print(f"  {key:40s} {cos[0]:.2f} / {cos[1]:.2f}")


if __name__ == "__main__":
    main()
