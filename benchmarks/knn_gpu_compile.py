"""Compile the fused kNN kernel ahead of time for Hopper and Ampere, without a GPU.

For each autotune configuration it runs Triton's real compiler (TTIR -> TTGIR ->
PTX -> cubin with ptxas) for the given compute capability and prints what a
profiler could not tell us on a CPU-only machine: whether it compiles, the MMA
instruction used (wgmma on sm_90, mma.sync on sm_80), whether the Q/Y loads were
software-pipelined (cp.async stages), shared memory, registers and spills::

    python benchmarks/knn_gpu_compile.py                 # every config, d=768, k=16 and 32
    python benchmarks/knn_gpu_compile.py --arch 90 --d 1024 --k 4

Pointers and row strides are declared 16-byte aligned / divisible by 16, which
is what Triton specialises a real launch to when d is a multiple of 8 (fp16).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile


def compile_config(arch: int, config: tuple, d: int, k: int, dtype: str = "fp16") -> dict:
    """Compile ``_knn_tile_body`` for ``cuda:arch`` with one (BM, BN, BD, warps, stages) tuple.

    Returns a dict: mma ("wgmma" | "mma.sync" | "none"), pipelined (bool), smem
    (bytes), regs and spill_bytes (from cuobjdump, None if it is unavailable).
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from miner.knn import triton_kernel as tk

    bm, bn, bd, warps, stages = config
    if dtype == "fp32":
        bd = max(16, bd // 2)  # what the autotuner's prune does for fp32
    fn = triton.jit(tk._knn_tile_body)
    el = "fp16" if dtype == "fp16" else "fp32"
    sig = {"q_ptr": f"*{el}", "y_ptr": f"*{el}", "sims_ptr": "*fp32", "ids_ptr": "*i64",
           "n": "i32", "m": "i32", "id_offset": "i64", "cols_per_split": "i32",
           "stride_q": "i32", "stride_y": "i32", "stride_split": "i32", "stride_row": "i32"}
    const = {"D": d, "K": k, "K_PAD": triton.next_power_of_2(k), "IEEE": dtype == "fp32",
             "BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_D": bd}
    sig.update({name: "constexpr" for name in const})
    aligned = ["q_ptr", "y_ptr", "sims_ptr", "ids_ptr", "stride_q", "stride_y"]
    attrs = {(fn.arg_names.index(a),): [["tt.divisibility", 16]] for a in aligned}
    kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const, attrs=attrs),
                            target=GPUTarget("cuda", arch, 32),
                            options={"num_warps": warps, "num_stages": stages})
    ptx, ttgir = kernel.asm["ptx"], kernel.asm["ttgir"]
    out = {"mma": "wgmma" if "wgmma" in ptx else "mma.sync" if "mma.sync" in ptx else "none",
           "pipelined": "async_copy_global_to_local" in ttgir or "async_tma_copy" in ttgir,
           "smem": kernel.metadata.shared, "regs": None, "spill_bytes": None}
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if os.path.exists(tool):
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(kernel.asm["cubin"])
            f.flush()
            usage = subprocess.run([tool, "--dump-resource-usage", f.name],
                                   capture_output=True, text=True).stdout
        if m := re.search(r"REG:(\d+).*?LOCAL:(\d+)", usage):
            out["regs"], out["spill_bytes"] = int(m.group(1)), int(m.group(2))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", type=int, nargs="+", default=[90, 80])
    p.add_argument("--d", type=int, nargs="+", default=[768])
    p.add_argument("--k", type=int, nargs="+", default=[16, 32])
    p.add_argument("--dtype", default="fp16", choices=["fp16", "fp32"])
    p.add_argument("--first", type=int, default=None, help="only the first N configs per arch")
    args = p.parse_args(argv)
    os.environ.pop("TRITON_INTERPRET", None)
    from miner.knn import triton_kernel as tk

    print("| arch | BM,BN,BD,warps,stages | d | k | dtype | mma | pipelined | smem KB | regs | spill B |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    failed = 0
    for arch in args.arch:
        space = tk.HOPPER_CONFIGS if arch == 90 else tk.AMPERE_CONFIGS if arch == 80 else tk.GENERIC_CONFIGS
        for config in space[:args.first]:
            for d in args.d:
                for k in args.k:
                    try:
                        r = compile_config(arch, config, d, k, args.dtype)
                    except Exception as e:  # report every config, then fail
                        failed += 1
                        print(f"| sm_{arch} | {config} | {d} | {k} | {args.dtype} | FAILED: "
                              f"{type(e).__name__}: {str(e)[:100]} | | | | |", flush=True)
                        continue
                    print(f"| sm_{arch} | {','.join(map(str, config))} | {d} | {k} | {args.dtype} | "
                          f"{r['mma']} | {r['pipelined']} | {r['smem'] / 1024:.0f} | {r['regs']} | "
                          f"{r['spill_bytes']} |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
