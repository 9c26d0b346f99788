"""Records torch 2.13.0's LBFGS on the problems of ``lbfgs_problems`` into golden/lbfgs.npz.

Run ``python tests/make_golden_lbfgs.py`` (needs torch==2.13.0).
"""

import json
import pathlib

import numpy as np
import torch

import lbfgs_problems as problems

assert torch.__version__.startswith("2.13.0"), torch.__version__

SEEDS = (0, 1)


def main():
    arrays, index = {}, []
    for name in problems.NAMES:
        for seed in SEEDS:
            for k, options in enumerate(problems.OPTIONS):
                case = f"{name}-{seed}-{k}"
                out = problems.run_torch(name, seed, options)
                for step, params in enumerate(out["params"]):
                    for key, value in params.items():
                        arrays[f"{case}/{step}/{key}"] = value
                index.append(dict(case=case, name=name, seed=seed, options=options, loss=out["loss"],
                                  n_iter=out["n_iter"], func_evals=out["func_evals"]))
    arrays["index"] = np.array(json.dumps(index))
    path = pathlib.Path(__file__).parent / "golden" / "lbfgs.npz"
    np.savez_compressed(path, **arrays)
    print(f"wrote {len(index)} cases to {path}")


if __name__ == "__main__":
    main()
