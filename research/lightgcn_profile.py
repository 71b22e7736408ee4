"""Probe: where a LightGCN owned full-mode step spends its CPU, per rank, at W ranks (#14).

    python research/lightgcn_profile.py --ranks 1 2 --bundle data/bundles/scale_mb \
        [--steps 2] [k=v overrides ...]   (e.g. data.batch_size=524288 model.local_shards=true)

Each rank builds the engine's session (as bench/scale.py does: sharded fused tables, the injected
exchange, the prefetching data adapter) and runs warm-up step(s), then ``--steps`` timed steps.
Per step it records wall and process CPU of: data wait, forward stages (lookup, propagation with
its halo fetches, gather_rows of the batch's final rows, loss), backward, optimizer. The stages are
timed by wrapping the model's own functions (nested: halo fetches inside propagation and
gather_rows are listed on their own too). The last step also runs under torch.profiler: the
backward's autograd nodes by CPU time. Bytes moved by every collective (distrec's exchange and
TorchRec's) are counted per stage, and the peak RSS of each stage is read after resetting
VmHWM (/proc/self/clear_refs). Output: JSON per rank under --out (default
bench/results/profile_lightgcn_full_w<W><suffix>.json) and a summary on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _rss_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out["VmRSS"], out["VmHWM"]


def _reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _malloc_mb() -> dict[str, float]:
    """glibc malloc's view (mallinfo2): bytes in use, free inside the heap (RSS malloc keeps but
    nothing uses: fragmentation), and mmapped chunks (large tensors), in MB."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                    "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]  # fmt: skip

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    m = libc.mallinfo2()
    return {"heap_in_use": m.uordblks / 2**20, "heap_free": m.fordblks / 2**20,
            "mmapped": m.hblkhd / 2**20}  # fmt: skip


def _checkpoint(marks: dict[str, Any], name: str) -> None:
    rss, hwm = _rss_mb()
    marks[name] = {"rss": rss, "hwm": hwm, **_malloc_mb()}


def _tensor_mb(obj: Any, depth: int = 4, seen: set[int] | None = None) -> float:
    """MB of the tensors and numpy arrays reachable from ``obj`` through attributes, lists,
    tuples and dicts (each storage counted once)."""
    import numpy as np
    import torch
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    seen = set() if seen is None else seen
    if id(obj) in seen or depth < 0:
        return 0.0
    seen.add(id(obj))
    if isinstance(obj, ShardedTensor):  # a view of this rank's shards
        return sum(_tensor_mb(sh.tensor, depth, seen) for sh in obj.local_shards())
    if isinstance(obj, torch.Tensor):
        if obj.layout != torch.strided:  # sparse CSR / COO: their component tensors
            parts = ([obj.crow_indices(), obj.col_indices(), obj.values()]
                     if obj.layout == torch.sparse_csr else [obj._indices(), obj._values()])  # fmt: skip
            return sum(_tensor_mb(x, depth, seen) for x in parts)
        key = obj.untyped_storage().data_ptr()
        if key in seen or obj.device.type == "meta":
            return 0.0
        seen.add(key)
        return obj.untyped_storage().nbytes() / 2**20
    if isinstance(obj, np.ndarray):
        base = obj if obj.base is None else obj.base
        if id(base) in seen and base is not obj:
            return 0.0
        seen.add(id(base))
        return obj.nbytes / 2**20
    if isinstance(obj, dict):
        return sum(_tensor_mb(v, depth - 1, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_mb(v, depth - 1, seen) for v in obj)
    if isinstance(obj, torch.nn.Module):
        own = sum(_tensor_mb(t, depth, seen) for t in [*obj.parameters(), *obj.buffers()])
        return own + sum(_tensor_mb(v, depth - 1, seen) for v in vars(obj).values())
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return sum(_tensor_mb(v, depth - 1, seen) for v in vars(obj).values())
    return 0.0


def _inventory(s: Any) -> dict[str, float]:
    """MB held by the structures a rank keeps between steps (each storage counted once)."""
    model = s.model
    seen: set[int] = set()
    out: dict[str, float] = {}
    out["tables+optimizer (ebc)"] = _tensor_mb(model.ebc, 6, seen)
    pg = getattr(model, "_pg", None)
    if pg is not None:
        out["graph: own-column CSR + transpose"] = sum(_tensor_mb(m[0], 3, seen) for m in pg.mats)
        out["graph: remote CSRs (pull, push) + transposes"] = sum(
            _tensor_mb(f, 3, seen) for m in pg.mats for f in m[1:] if f is not None
        )
        out["graph: push plan"] = _tensor_mb(getattr(pg, "push", None), 2, seen)
        out["graph: halo plan"] = _tensor_mb(pg.halo, 2, seen)
    out["local_shards ids"] = _tensor_mb(getattr(model, "_local", None), 2, seen)
    out["data plane (reachable from s.data)"] = _tensor_mb(s.data, 8, seen)
    return out


class Stages:
    """Nested stage timers: wall, process CPU, collective bytes and peak RSS per label."""

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.bytes: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)
        self.peak: dict[str, float] = defaultdict(float)
        self.sys: dict[str, float] = defaultdict(float)  # kernel CPU (page faults, socket copies)
        self.minflt: dict[str, int] = defaultdict(int)  # minor page faults (fresh pages touched)

    @contextlib.contextmanager
    def stage(self, name: str, peak: bool = False):  # type: ignore[no-untyped-def]
        self.stack.append(name)
        if peak:
            _reset_peak()
        t, c = time.perf_counter(), time.process_time()
        ru = resource.getrusage(resource.RUSAGE_SELF)
        try:
            yield
        finally:
            self.wall[name] += time.perf_counter() - t
            self.cpu[name] += time.process_time() - c
            ru2 = resource.getrusage(resource.RUSAGE_SELF)
            self.sys[name] += ru2.ru_stime - ru.ru_stime
            self.minflt[name] += ru2.ru_minflt - ru.ru_minflt
            self.calls[name] += 1
            if peak:
                self.peak[name] = max(self.peak[name], _rss_mb()[1])
            self.stack.pop()

    def add_bytes(self, kind: str, n: int) -> None:
        where = self.stack[-1] if self.stack else "?"
        self.bytes[f"{where}/{kind}"] += n

    def wrap(self, obj: Any, attr: str, name: str) -> None:
        fn = getattr(obj, attr)

        def wrapped(*a: Any, **kw: Any) -> Any:
            with self.stage(name):
                return fn(*a, **kw)

        setattr(obj, attr, wrapped)


def _nbytes(x: Any) -> int:
    import torch

    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, (list, tuple)):
        return sum(_nbytes(v) for v in x)
    return 0


def _count_collectives(st: Stages) -> None:
    """Count the bytes every torch.distributed collective sends (input tensors)."""
    import torch.distributed as dist

    for name in ("all_to_all_single", "all_to_all", "reduce_scatter_tensor", "reduce_scatter",
                 "all_gather_into_tensor", "all_gather", "all_reduce", "_reduce_scatter_base",
                 "_all_gather_base", "broadcast"):  # fmt: skip
        fn = getattr(dist, name, None)
        if fn is None:
            continue

        sig = inspect.signature(fn)

        def wrapped(*a: Any, _fn: Any = fn, _sig: Any = sig, _name: str = name, **kw: Any) -> Any:
            bound = _sig.bind_partial(*a, **kw).arguments
            for key in ("input", "input_tensor", "input_list", "input_tensor_list", "tensor"):
                if key in bound:
                    st.add_bytes(_name, _nbytes(bound[key]))
                    break
            return _fn(*a, **kw)

        setattr(dist, name, wrapped)


def _forward_saving(fn: Any, batch: Any, out: list[float]) -> Any:
    """``fn(batch)`` while summing the bytes autograd saves for backward (each storage once) into
    ``out`` [1] (MB)."""
    import torch

    seen: set[int] = set()
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.layout == torch.strided and t.device.type != "meta":
            key = t.untyped_storage().data_ptr()
            if key not in seen:
                seen.add(key)
                total[0] += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        res = fn(batch)
    out.append(total[0] / 2**20)
    return res


def worker(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO))
    import torch
    import torch.distributed as dist
    from torch.profiler import ProfilerActivity, profile

    import distrec.graph.halo as halo_mod
    import distrec.models.lightgcn.local_shards as ls_mod
    import distrec.models.lightgcn.model as lg_mod
    from distrec.config import load_config
    from distrec.engine.session import build_session

    torch.set_num_threads(1)
    marks: dict[str, Any] = {}
    _checkpoint(marks, "imports")
    st = Stages()
    # stage wrappers around the model's own functions (module-level names the model calls)
    st.wrap(lg_mod, "propagate_partitioned", "fwd.propagate")
    if hasattr(lg_mod, "readout_partitioned"):  # propagation + readout in one node
        st.wrap(lg_mod, "readout_partitioned", "fwd.propagate")
    st.wrap(lg_mod, "gather_rows", "fwd.gather_rows")
    st.wrap(halo_mod.Halo, "fetch", "fwd.halo_fetch")
    st.wrap(halo_mod.Halo, "__init__", "fwd.halo_plan")
    st.wrap(lg_mod.LightGCN, "_lookup", "fwd.lookup")
    st.wrap(ls_mod.LocalShards, "rows", "fwd.lookup")
    _count_collectives(st)

    over = [f"data.bundle={args.bundle}", "graph.mode=full", "metrics.enabled=false",
            f"run.dir={args.tmp}/run", "train.log_every=1000000", "run.checkpoint_every=0",
            *args.overrides]  # fmt: skip
    cfg = load_config("lightgcn", str(REPO / "configs/lightgcn/synth.yaml"), over)
    s = build_session("lightgcn", cfg, write_config=False)
    rank = s.env.rank
    assert s.optimizer is not None
    rss_build = _rss_mb()
    _checkpoint(marks, "session built")
    it = iter(s.data.train_batches(0))
    steps: list[dict[str, Any]] = []
    prof_table: list[dict[str, Any]] = []
    total = args.warmup + args.steps + int(args.profile)
    for k in range(total):
        # warm-up steps and the profiled (last) step run the same code; their figures are kept
        # apart from the measured steps' (the profiler's own overhead would inflate them)
        profiled = args.profile and k == total - 1
        measured = args.warmup <= k and not profiled
        if not measured:
            st.__dict__, saved = Stages().__dict__, st.__dict__
        prof = profile(activities=[ProfilerActivity.CPU], record_shapes=True) if profiled else None
        t0, c0 = time.perf_counter(), time.process_time()
        with st.stage("data_wait", peak=True):
            batch = next(it)
        if k == 0:
            _checkpoint(marks, "first batch")
            inv0 = _inventory(s)
        if k == total - 1:
            _checkpoint(marks, "between steps")
        if prof is not None:
            prof.__enter__()
        saved_mb: list[float] = []
        with st.stage("forward", peak=True):
            if k == 0:  # autograd's saved tensors of one forward, each storage once
                loss, _ = _forward_saving(s.wrapped, batch, saved_mb)
            else:
                loss, _ = s.wrapped(batch)
        if k == 0:
            _checkpoint(marks, "after first forward")
            saved_first = saved_mb[0]
        with st.stage("backward", peak=True):
            s.optimizer.zero_grad()
            loss.backward()
        with st.stage("optimizer"):
            s.optimizer.step()
        if prof is not None:
            prof.__exit__(None, None, None)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        g = loss.detach().clone()
        dist.all_reduce(g)
        rec = {"wall": wall, "cpu": cpu, "loss": float(g) / dist.get_world_size()}
        steps.append(
            {**rec, "kind": "measured" if measured else "profiled" if profiled else "warm-up"}
        )
        if not measured:
            st.__dict__ = saved
        if k == 0:
            _checkpoint(marks, "after first step")
        if prof is not None:
            for e in prof.key_averages(group_by_input_shape=True):
                prof_table.append({"name": e.key, "cpu_total_ms": e.cpu_time_total / 1e3,
                                   "self_cpu_ms": e.self_cpu_time_total / 1e3,
                                   "count": e.count, "shapes": str(e.input_shapes)[:200]})  # fmt: skip
        del loss, batch
    prof_table.sort(key=lambda r: -r["self_cpu_ms"])
    n = max(args.steps, 1)
    pg: Any = getattr(s.model, "_pg", None)
    out = {
        "rank": rank,
        "world": dist.get_world_size(),
        "overrides": args.overrides,
        "local_shards_used": getattr(s.model, "_local", None) is not None,
        "halo_rows_per_layer": None if pg is None else int(getattr(pg, "halo_rows", pg.halo.size)),
        "halo_send_rows": None if pg is None else list(pg.halo.send),
        "halo_recv_rows": None if pg is None else list(pg.halo.recv),
        "steps": steps,
        "per_step_wall_s": {k: v / n for k, v in st.wall.items()},
        "per_step_cpu_s": {k: v / n for k, v in st.cpu.items()},
        "per_step_sys_s": {k: v / n for k, v in st.sys.items()},
        "per_step_minor_faults": {k: v // n for k, v in st.minflt.items()},
        "calls_per_step": {k: v / n for k, v in st.calls.items()},
        "bytes_per_step": {k: v // n for k, v in st.bytes.items()},
        "peak_rss_mb_by_stage": dict(st.peak),
        "rss_after_build_mb": rss_build,
        "memory_marks_mb": marks,
        "inventory_mb_after_first_batch": inv0,
        "inventory_mb_after_steps": _inventory(s),
        "autograd_saved_mb_first_forward": saved_first,
        "peak_rss_mb": _rss_mb()[1],
        "profile_top_self_cpu": prof_table[:60],
        "profile_backward_nodes": sorted(
            (r for r in prof_table if "evaluate_function" in r["name"]),
            key=lambda r: -r["cpu_total_ms"],
        )[:30],
    }
    Path(args.tmp, f"rank{rank}.json").write_text(json.dumps(out))
    dist.barrier()
    dist.destroy_process_group()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--bundle", required=True)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument("--suffix", default="")
    p.add_argument("--port", type=int, default=29880)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    if args.worker:
        worker(args)
        return 0
    for i, w in enumerate(args.ranks):
        with tempfile.TemporaryDirectory(prefix="lgcn-prof-") as tmp:
            cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={w}",
                   "--master_addr=127.0.0.1", f"--master_port={args.port + i}", __file__,
                   "--worker", "--bundle", args.bundle, "--tmp", tmp, "--steps", str(args.steps),
                   "--warmup", str(args.warmup), *([] if args.profile else ["--no-profile"]),
                   *args.overrides]  # fmt: skip
            env = dict(os.environ, PYTHONPATH=str(REPO))
            load0 = os.getloadavg()
            subprocess.run(cmd, check=True, cwd=REPO, env=env)
            recs = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(w)]
        res = {"ranks": w, "load_before": load0, "load_after": os.getloadavg(),
               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "command": " ".join(["python", *sys.argv]), "per_rank": recs}  # fmt: skip
        path = REPO / "bench" / "results" / f"profile_lightgcn_full_w{w}{args.suffix}.json"
        path.write_text(json.dumps(res, indent=1) + "\n")
        for r in recs:
            print(f"[profile] W={w} rank {r['rank']} local={r['local_shards_used']} "
                  f"steps={[(round(x['wall'], 2), round(x['cpu'], 2)) for x in r['steps']]}",
                  file=sys.stderr)  # fmt: skip
            for k in sorted(r["per_step_cpu_s"]):
                print(f"   {k:22s} wall {r['per_step_wall_s'][k]:7.3f} s  cpu "
                      f"{r['per_step_cpu_s'][k]:7.3f} s  sys {r['per_step_sys_s'][k]:6.3f} s  "
                      f"faults {r['per_step_minor_faults'][k]:8d}  peak "
                      f"{r['peak_rss_mb_by_stage'].get(k, 0):7.0f} MB", file=sys.stderr)  # fmt: skip
            for k, v in r["memory_marks_mb"].items():
                print(f"   mem {k:22s} " + " ".join(f"{a} {b:7.0f}" for a, b in v.items()),
                      file=sys.stderr)  # fmt: skip
            for k, v in r["inventory_mb_after_steps"].items():
                print(f"   inventory {k:40s} {v:8.1f} MB", file=sys.stderr)
            print(
                f"   autograd saved (first forward) {r['autograd_saved_mb_first_forward']:.0f} MB",
                file=sys.stderr,
            )
            for k, v in sorted(r["bytes_per_step"].items()):
                print(f"   bytes {k:40s} {v / 1e6:9.1f} MB", file=sys.stderr)
        print(f"[profile] -> {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
