"""Where a compiled L-BFGS solve spends its time, loop by loop of the machine code.

    python benchmarks/jit_hot_loops.py [gradxform|optax] [PROBLEM] [--seconds 6] [--top 25]

On jax >= 0.12 XLA's CPU backend compiles a solve's ``while_loop`` into one function
(``call.N_kernel``), so ``jax.profiler`` sees one thunk and ``perf`` sees anonymous JIT
code. This script names the code: it runs the solve (an ``lbfgs_bench.py`` problem, or
Rosenbrock with N unknowns for an integer PROBLEM) in a child process, samples it with
``perf record``, and asks ``gdb``, attached to the child, which JIT function holds the
hottest address (XLA registers its code with gdb's JIT interface). It then disassembles
that function and prints each loop of it (a backward jump and its target) with its
share of the samples and its instruction mix: ``vaddsd`` chains with a ``cmp`` per
element are a sum that is not vectorized, ``cmp``/``cmovle`` runs an integer maximum,
``vmulpd``/``vfmadd...pd`` vectorized arithmetic. Nested loops are listed each.

Needs ``perf`` and ``gdb``, and the right to attach to a child process (ptrace). Timing is
not its purpose (``minimize_ab.py`` and ``lbfgs_overhead.py`` time); it says where to
look. RESULTS.md, "Where jax 0.12's compiled loop spends its time", shows its use.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import time

_CHILD = r"""
import sys, time
sys.path.insert(0, {bench!r})
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
import lbfgs_bench
from gradxform.optimizers import lbfgs
problem = {problem!r}
if problem.isdigit():
    f, x = lbfgs_bench.rosenbrock, jnp.asarray(np.tile([-1.2, 1.0], int(problem) // 2))
else:
    (f, x0), = [(f, x0) for name, f, x0, _ in lbfgs_bench.problems() if name == problem]
    x = jnp.asarray(x0)
if {solver!r} == "gradxform":
    solve = jax.jit(lambda x: lbfgs.minimize(f, x, **lbfgs_bench.OPTIONS))
else:
    solve = lbfgs_bench.optax_solver(f)
jax.block_until_ready(solve(x))
print("ready", flush=True)
end = time.time() + {seconds}
while time.time() < end:
    jax.block_until_ready(solve(x))
"""


def _gdb(pid: int, *commands: str) -> str:
    args = ["gdb", "-p", str(pid), "-batch", "-nx"]
    for command in commands:
        args += ["-ex", command]
    return subprocess.run(args, capture_output=True, text=True, timeout=300).stdout


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("solver", nargs="?", default="gradxform", choices=("gradxform", "optax"))
    parser.add_argument("problem", nargs="?", default="rosenbrock-1000")
    parser.add_argument("--seconds", type=float, default=6.0, help="how long perf samples")
    parser.add_argument("--top", type=int, default=25, help="loops to print, hottest first")
    args = parser.parse_args(argv)

    bench = os.path.dirname(os.path.abspath(__file__))
    source = _CHILD.format(bench=bench, problem=args.problem, solver=args.solver, seconds=args.seconds + 60)
    child = subprocess.Popen([sys.executable, "-c", source], stdout=subprocess.PIPE, text=True)
    try:
        if child.stdout.readline().strip() != "ready":
            raise SystemExit("the solve did not start")
        time.sleep(1.0)
        with tempfile.TemporaryDirectory() as folder:
            data = os.path.join(folder, "perf.data")
            subprocess.run(["perf", "record", "-F", "5000", "-p", str(child.pid), "-o", data, "--",
                            "sleep", str(args.seconds)], capture_output=True, check=True)
            script = subprocess.run(["perf", "script", "-i", data, "-F", "ip,dso"], capture_output=True,
                                    text=True).stdout
        samples = collections.Counter()
        elsewhere = 0
        for line in script.splitlines():
            fields = line.split()
            if len(fields) >= 2 and "perf-" in fields[1]:  # anonymous JIT code
                samples[int(fields[0], 16)] += 1
            elif fields:
                elsewhere += 1
        if not samples:
            raise SystemExit("no samples in JIT code")
        hottest = max(samples, key=samples.get)
        where = re.search(r"^(\S+) \+ \d+ in section", _gdb(child.pid, f"info symbol {hottest:#x}"), re.M)
        if where is None:
            raise SystemExit("gdb does not name the JIT code (XLA's gdb registration is missing)")
        function = where.group(1)
        start = int(re.search(r"(0x[0-9a-f]+) <", _gdb(child.pid, f"p &'{function}'")).group(1), 16)
        end = max(ip for ip in samples if 0 <= ip - start < 1 << 22) + 16
        listing = _gdb(child.pid, f"disassemble {start:#x},{end:#x}")
    finally:
        child.kill()
        child.wait()

    rows = []  # (samples, offset, instruction)
    for line in listing.splitlines():
        match = re.match(r"\s*(?:=> )?(0x[0-9a-f]+) <[^+>]*\+(\d+)>:\s*(.*)", line)
        if match:
            rows.append((samples.get(int(match.group(1), 16), 0), int(match.group(2)), match.group(3)))
    total = sum(samples.values())
    inside = sum(count for count, _, _ in rows)
    print(f"# {args.solver} on {args.problem}: {total} samples in JIT code ({inside} in {function}), "
          f"{elsewhere} elsewhere (runtime, memmove, Python)")
    loops = set()
    for _, offset, instruction in rows:
        jump = re.search(r"^j\w+\s+0x[0-9a-f]+ <[^+>]*\+(\d+)>", instruction)
        if jump and int(jump.group(1)) < offset:
            loops.add((int(jump.group(1)), offset))
    table = []
    for first, last in loops:
        body = [row for row in rows if first <= row[1] <= last]
        count = sum(row[0] for row in body)
        opcodes = collections.Counter(row[2].replace("{evex} ", "").split()[0] for row in body)
        mix = " ".join(f"{op}:{n}" for op, n in opcodes.most_common()
                       if op.startswith(("v", "cmp", "cmov", "call")))
        table.append((count, first, last, len(body), mix))
    print("| share of samples | loop (offsets) | instructions | mix (vector, compare, call) |")
    print("|---|---|---|---|")
    for count, first, last, size, mix in sorted(table, reverse=True)[: args.top]:
        print(f"| {count / total:.1%} | {first:#x}-{last:#x} | {size} | {' '.join(mix.split()[:8])} |")


if __name__ == "__main__":
    main()
