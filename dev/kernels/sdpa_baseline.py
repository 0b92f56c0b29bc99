"""PyTorch fp16 SDPA decode baseline, timed in the same device run as the kernel lab, and the combined table.

usage: python3 sdpa_baseline.py --sizes 4096,32768,131072,1048576 --lab lab.jsonl --out sdpa.jsonl
"""
import argparse, json, statistics, sys
import torch
import torch.nn.functional as F


def median_us(fn, warmup=3, reps=30):
    for i in range(warmup):
        fn(i)
    times = []
    for i in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(i); e.record(); e.synchronize()
        times.append(s.elapsed_time(e) * 1000.0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="4096,32768,131072,1048576")
    ap.add_argument("--lab", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--shapes", default="mha,gqa", help="mha (32q/32kv), gqa (32q/8kv)")
    a = ap.parse_args()
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(0)
    print(f"torch {torch.__version__}, {name}")
    x = torch.empty(1 << 30, dtype=torch.uint8, device=dev); y = torch.empty_like(x)
    copy = 2 * x.numel() / (median_us(lambda i: y.copy_(x), 3, 15) * 1e-6)
    print(f"torch copy bandwidth (read + write): {copy / 1e9:.0f} GB/s")
    del x, y
    rows = []
    shapes = {"mha": (32, 32), "gqa": (32, 8)}
    for hq, hkv in [shapes[s] for s in a.shapes.split(",")]:
        for n in [int(s) for s in a.sizes.split(",")]:
            per = 2 * hkv * n * 128 * 2
            copies = max(1, min(32, (1 << 30) // per))
            g = torch.Generator(device=dev).manual_seed(0)
            ks = [torch.randn(1, hkv, n, 128, device=dev, dtype=torch.float16, generator=g) for _ in range(copies)]
            vs = [torch.randn(1, hkv, n, 128, device=dev, dtype=torch.float16, generator=g) for _ in range(copies)]
            q = torch.randn(1, hq, 1, 128, device=dev, dtype=torch.float16, generator=g)
            gqa = hq != hkv
            fn = lambda i: F.scaled_dot_product_attention(q, ks[i % copies], vs[i % copies], enable_gqa=gqa)
            us = median_us(fn, 3, a.reps)
            gbps = per / (us * 1e-6) / 1e9
            r = dict(kind="sdpa", shape=f"{hq}q/{hkv}kv", tokens=n, us=round(us, 2), bytes=per, gbps=round(gbps, 1), device=name)
            rows.append(r)
            print(f"sdpa {hq}q/{hkv}kv n={n}: {us:.1f} us, {gbps:.0f} GB/s ({100 * gbps * 1e9 / copy:.0f}% of copy)")
            del ks, vs
            torch.cuda.empty_cache()
    if a.out:
        with open(a.out, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    if a.lab:
        lab = [json.loads(l) for l in open(a.lab) if l.strip()]
        times = {(r["shape"], r["tokens"], r["cache"]): r for r in lab if r["kind"] == "time"}
        print()
        print(f"Decode attention, one layer, batch 1, {name} (same run): time in us, speed-up = SDPA fp16 / ours")
        names = {"nuq4": "nuq4-1%", "nuq3": "nuq3-1%", "nuq2": "nuq2-1%", "nuq4d": "nuq4 dense", "nuq3d": "nuq3 dense", "nuq2d": "nuq2 dense",
                 "nuq4s": "nuq4 sparse-k", "nuq3s": "nuq3 sparse-k", "nuq2s": "nuq2 sparse-k"}
        # Formats in the lab's order; "nuq4@7" = kernel version 7 of nuq4 (a column per version timed).
        caches = list(dict.fromkeys(r["cache"] for r in lab if r["kind"] == "time"))
        nuq = [c for c in caches if c != "f16"]

        def label(c):
            base, _, ver = c.partition("@")
            return "ours f16" if c == "f16" else names.get(base, base) + (f" v{ver}" if ver else "")
        print("| shape | tokens | SDPA fp16 | " + " | ".join(label(c) for c in caches) + " | "
              + " | ".join(f"x {c}" for c in nuq) + " | " + " | ".join(f"{c} % copy BW" for c in nuq) + " |")
        print("|---|---:|---:|" + "---:|" * (len(caches) + 2 * len(nuq)))
        for r in rows:
            cells = [times.get((r["shape"], r["tokens"], c)) for c in caches]
            us = [f"{c['us']:.1f}" if c else "-" for c in cells]
            sp = [f"{r['us'] / c['us']:.2f}" if c else "-" for c, n in zip(cells, caches) if n != "f16"]
            bw = [f"{100 * c['copy_frac']:.0f}%" if c else "-" for c, n in zip(cells, caches) if n != "f16"]
            print(f"| {r['shape']} | {r['tokens']} | {r['us']:.1f} | " + " | ".join(us + sp + bw) + " |")

if __name__ == "__main__":
    main()
