using System.Diagnostics;
using Kvq.Cache.Offload;
using Kvq.Cuda.Model;
using Kvq.Cuda.Offload;

namespace Kvq.ModelCheck;

/// <summary>
/// Issue 20's GPU Must show, in one process (dev/gpu/offload-2m.sh): the LLaMA-7B-shaped model (random f16 weights)
/// over a KVQuant cache whose older blocks live in pinned host memory (Offload/OffloadedKvSequence).
///  1. At <c>checkCtx</c> tokens (both fit on the device): `full` mode (every block, the host ones streamed in) against
///     on-device attention (CudaKvSequence): logits of every decode step, rel L2 (target &lt;= 1e-5), and both speeds.
///  2. At <c>ctx</c> tokens (more than the device holds even at 2 bits): decode with a block budget (2%): tok/s, prefetch
///     hit rate, the share of transfers hidden behind compute, host and device memory.
/// The KV is synthetic: random keys and values made on the device and encoded by the device encoders chunk by chunk (no
/// 2M-token prefill: that would take hours), the same in both sequences of step 1. Queries come from the model's own
/// decode steps. Exit code 1 when the full-mode check fails or a run could not be made.
/// </summary>
internal static class OffloadRun
{
    private const int BT = CudaKvCache.BlockTokens;

    public static int Run(int checkCtx, int ctx, string budgetText, int warmup, int steps, string kv)
    {
        var config = SevenB.Config with { ContextLength = Math.Max(ctx, checkCtx) + 4096 };
        var sw = Stopwatch.StartNew();
        using var model = CudaTransformer.CreateRandom(config, new CudaModelOptions(CudaWeightType.F16, MaxBatch: 16));
        Console.WriteLine($"7B-shaped model, random f16 weights on {model.Device}: {Gib(model.WeightBytes):F2} GiB, made in {sw.ElapsedMilliseconds} ms");
        Console.WriteLine($"KV: {kv} (hand-made codecs), sink 1; the cache is filled with SYNTHETIC keys and values (random, made on the device and " +
                          "encoded by the device encoders), not by a prefill; queries come from the model's decode steps.");
        var rows = new List<string>();
        int failures = 0;
        if (checkCtx > 0) failures += FullCheck(model, checkCtx, steps, kv, rows);
        if (ctx > 0) failures += BudgetRun(model, ctx, budgetText, warmup, steps, kv, rows);
        Console.WriteLine();
        Console.WriteLine("| run | tokens | budget | decode tok/s | check / hit rate | hidden transfer share | per step: copied (demand / prefetch) | device GiB (KV tiers / in use) | host GiB pinned |");
        Console.WriteLine("|---|---:|---|---:|---|---:|---|---:|---:|");
        foreach (var r in rows) Console.WriteLine(r);
        Console.WriteLine(failures == 0 ? "offload run: ok" : $"offload run: {failures} FAILED");
        return failures == 0 ? 0 : 1;
    }

    /// <summary>Step 1: `full` offload against the device cache, same synthetic KV, same tokens.</summary>
    private static int FullCheck(CudaTransformer model, int ctx, int steps, string kv, List<string> rows)
    {
        int total = ctx + steps, blocks = (total + BT - 1) / BT;
        var sw = Stopwatch.StartNew();
        using var dev = model.CreateKvQuantSequence(_ => SevenB.Codecs(kv), 1, total, contiguousNuq: false);
        using var off = model.CreateOffloadedKvQuantSequence(_ => SevenB.Codecs(kv), 1, total, KvOffloadBudget.Parse("full"),
            new OffloadSizes(blocks, blocks, blocks));
        model.FillSyntheticKv([dev, off], ctx, chunk: 8192, seed: 20);
        int hostEnd = ctx / BT - 1;   // blocks 1 .. hostEnd-1 to the host; the sink block and the last ones stay home
        off.MoveToHost(1, hostEnd);
        Console.WriteLine($"\n== full mode vs on-device attention at {ctx} tokens: filled both and moved {hostEnd - 1} blocks to the host in {sw.Elapsed.TotalSeconds:F1} s");
        var a = new float[model.Config.VocabSize];
        var b = new float[a.Length];
        int token = 1;
        double worst = 0, devS = 0, offS = 0, offFirst = 0;
        for (int s = 0; s < steps; s++)
        {
            var t = Stopwatch.StartNew();
            model.Forward([token], dev, a);
            double td = t.Elapsed.TotalSeconds;
            t.Restart();
            model.Forward([token], off, b);
            double to = t.Elapsed.TotalSeconds;
            if (s == 0) offFirst = to;
            else { devS += td; offS += to; }
            double num = 0, den = 0;
            for (int i = 0; i < a.Length; i++) { double d = a[i] - b[i]; num += d * d; den += (double)a[i] * a[i]; }
            double rel = Math.Sqrt(num / Math.Max(den, 1e-300));
            worst = Math.Max(worst, rel);
            Console.WriteLine($"step {s}: logits rel L2 {rel:E2} (device {td * 1e3:F1} ms, full offload {to * 1e3:F1} ms)");
            token = Argmax(a);
        }
        var st = off.Stats;
        bool ok = worst <= 1e-5;
        Console.WriteLine($"full mode vs on-device attention, {steps} decode steps: worst logits rel L2 {worst:E2} (target <= 1e-5): {(ok ? "ok" : "FAIL")}; " +
                          $"first offload step {offFirst * 1e3:F0} ms (every host block streamed in: {st.DemandFetched} demand + {st.Prefetched} prefetched block copies)");
        int timed = Math.Max(1, steps - 1);
        var (free, totalMem) = model.DeviceMemory();
        rows.Add($"| 7B, on-device attention (CudaKvSequence) | {ctx:N0} | every block | {timed / devS:F2} | | | | {Gib(dev.DeviceBytes):F2} / {Gib(totalMem - free):F2} | 0 |");
        rows.Add($"| 7B, offload `full` ({off.HostBlocksUsed} of {blocks} blocks home on the host) | {ctx:N0} | full | {timed / offS:F2} | " +
                 $"logits rel L2 {worst:E2} vs on-device: {(ok ? "ok" : "FAIL")} | {st.HiddenShare:P1} | first step: {st.DemandFetched} / {st.Prefetched} block copies | " +
                 $"{Gib(off.DeviceBytes):F2} / {Gib(totalMem - free):F2} | {Gib(off.HostBytes):F2} |");
        return ok ? 0 : 1;
    }

    /// <summary>Step 2: the long context under a block budget, most of it home on the host.</summary>
    private static int BudgetRun(CudaTransformer model, int ctx, string budgetText, int warmup, int steps, string kv, List<string> rows)
    {
        var c = model.Config;
        var budget = KvOffloadBudget.Parse(budgetText);
        var codecs = SevenB.Codecs(kv);
        var spec = codecs.Keys[0].Spec;
        int kw = (c.HeadDim * spec.Bits + 31) / 32;
        int slots = codecs.Keys[0].OutlierSlots, vslots = 2 * codecs.Values[0].OutliersPerTail;
        long perHeadToken = kw * 4L * 2 + 4 + slots * 3L + vslots * 3L;
        long blockBytes = perHeadToken * BT * c.KvHeads * c.Layers;
        const int chunk = 16384;
        int chunkBlocks = chunk / BT;
        long hostAvail = HostAvailableBytes() - (12L << 30);   // room for the process, the OS and the page cache
        var (free0, totalMem) = model.DeviceMemory();
        int total = ctx + warmup + steps, n = (total + BT - 1) / BT;
        int perStep = budget.BlocksFor(n);
        int working = Math.Min(n, 3 * perStep + 8);   // this step's blocks, the next layer's prediction, and reuse
        long summaries = (long)n * c.Layers * c.KvHeads * 2 * c.HeadDim * 2;
        // What the fill and the decode steps allocate beside the tiers (the 16k-token fill chunk's activations and
        // f32 keys, cuBLAS workspace, the driver's own pools). Run 35 (H100, session 9) sized this as a flat 4 GiB and
        // ran out of device memory building the tiers (8 MiB free): keep a sixth of what is free, at least 4 GiB.
        long scratch = Math.Max(4L << 30, free0 / 6);
        long homeBytes = free0 - summaries - (long)working * blockBytes - scratch;
        int home = (int)Math.Min(n, homeBytes / blockBytes);
        int hostBlocks = Math.Max(0, n - home + chunkBlocks + 2);
        string note = "";
        if (home < chunkBlocks + 4)
        {
            rows.Add($"| 7B, offload {budgetText} | {ctx:N0} | {budgetText} | NOT RUN: the device has {Gib(free0):F1} GiB free, the summaries and working set need " +
                     $"{Gib(summaries + (long)working * blockBytes):F1} | | | | | |");
            return 1;
        }
        if ((long)hostBlocks * blockBytes > hostAvail)
        {
            // MISSED at this length: say so, and run the longest context that fits the host's memory.
            int fits = (int)(hostAvail / blockBytes) + home - chunkBlocks - 2;
            int reduced = (int)Math.Max(chunk, ((long)fits * BT - warmup - steps) / chunk * chunk);
            note = $" (REDUCED from {ctx:N0}: the host tier would need {Gib((long)hostBlocks * blockBytes):F1} GiB pinned, {Gib(hostAvail):F1} GiB available)";
            Console.WriteLine($"\n== {ctx} tokens do not fit: host tier {Gib((long)hostBlocks * blockBytes):F1} GiB > {Gib(hostAvail):F1} GiB available; running {reduced}");
            ctx = reduced;
            total = ctx + warmup + steps;
            n = (total + BT - 1) / BT;
            hostBlocks = Math.Max(0, n - home + chunkBlocks + 2);
        }
        int hostEnd = Math.Min(n - 1, 1 + hostBlocks);   // blocks [1, hostEnd) live on the host
        hostBlocks = hostEnd - 1;
        var sw = Stopwatch.StartNew();
        Console.WriteLine($"\n== {budgetText} budget at {ctx:N0} tokens: {n} blocks of {BT} ({Gib(blockBytes) * 1024:F2} MiB each, all layers and heads); " +
                          $"device: {home} home blocks, {working} working slots per (layer, KV head), summaries {Gib(summaries):F2} GiB; host: {hostBlocks} blocks " +
                          $"({Gib((long)hostBlocks * blockBytes):F1} GiB pinned, {Gib(HostAvailableBytes()):F1} GiB available before)");
        OffloadedKvSequence off;
        try
        {
            off = model.CreateOffloadedKvQuantSequence(_ => codecs, 1, total, budget, new OffloadSizes(home, working, hostBlocks));
        }
        catch (Exception e) when (e is HostMemoryException or Cuda.CudaException)
        {
            Console.WriteLine($"could not build the tiers: {e.Message}");
            rows.Add($"| 7B, offload {budgetText} | {ctx:N0} | {budgetText} | NOT RUN: {e.Message} | | | | | |");
            return 1;
        }
        using (off)
        {
            Console.WriteLine($"tiers made in {sw.Elapsed.TotalSeconds:F1} s");
            sw.Restart();
            int moved = 1;
            model.FillSyntheticKv([off], ctx, chunk, seed: 21, afterChunk: done =>
            {
                int upTo = Math.Min(hostEnd, done / BT);
                if (upTo > moved) { off.MoveToHost(moved, upTo); moved = upTo; }
                if (done % (chunk * 16) == 0) Console.WriteLine($"  filled {done:N0} tokens, {moved - 1} blocks on the host, {sw.Elapsed.TotalSeconds:F0} s");
            });
            Console.WriteLine($"filled {ctx:N0} tokens ({off.HostBlocksUsed} blocks on the host) in {sw.Elapsed.TotalSeconds:F1} s");
            var logits = new float[c.VocabSize];
            int token = 1;
            var times = new List<double>();
            OffloadStats? before = null;
            for (int s = 0; s < warmup + steps; s++)
            {
                if (s == warmup) before = off.Stats;
                var t = Stopwatch.StartNew();
                model.Forward([token], off, logits);
                double ms = t.Elapsed.TotalMilliseconds;
                if (s >= warmup) times.Add(ms);
                Console.WriteLine($"step {s}{(s < warmup ? " (warm-up)" : "")}: {ms:F1} ms");
                token = Argmax(logits);
            }
            if (!logits.All(float.IsFinite)) throw new InvalidOperationException("non-finite logits");
            var st = off.Stats.Since(before!);
            double tokS = steps / (times.Sum() / 1e3);
            var (free, _) = model.DeviceMemory();
            double perStepDemand = st.DemandFetched / (double)steps, perStepPre = st.Prefetched / (double)steps;
            bool speedOk = tokS >= 5, hiddenOk = st.HiddenShare >= 0.8;
            Console.WriteLine($"decode {tokS:F2} tok/s (target >= 5: {(speedOk ? "met" : "MISSED")}), median step {times.Order().ElementAt(times.Count / 2):F1} ms; " +
                              $"per step: {st.ChosenBlocks / (double)steps:F0} blocks read (all layers and KV heads), {st.HostBlocksChosen / (double)steps:F0} of them host-home, " +
                              $"hit rate {st.HitRate:P1}, prefetched {perStepPre:F0} ({st.PrefetchedUsed / (double)steps:F0} used), demand {perStepDemand:F0}; " +
                              $"hidden transfer share {st.HiddenShare:P1} (target >= 80%: {(hiddenOk ? "met" : "MISSED")}); copy-stream time per step: prefetch " +
                              $"{st.PrefetchMs / steps:F1} ms, demand {st.DemandMs / steps:F1} ms; selection (CPU, shared rule) {st.SelectMs / steps:F1} ms per step");
            rows.Add($"| 7B, offload {budgetText} (rule {budget.Rule.ToString().ToLowerInvariant()}, spread {budget.Spread}){note} | {ctx:N0} | {budgetText} " +
                     $"({perStep} of {n} blocks per layer and KV head) | {tokS:F2} ({(speedOk ? "met" : "MISSED")} >= 5) | hit rate {st.HitRate:P1} | " +
                     $"{st.HiddenShare:P1} ({(hiddenOk ? "met" : "MISSED")} >= 80%) | {perStepDemand:F0} / {perStepPre:F0} block copies " +
                     $"({Gib((long)((st.DemandBytes + st.PrefetchBytes) / (double)steps)) * 1024:F0} MiB) | {Gib(off.DeviceBytes):F2} / {Gib(totalMem - free):F2} | {Gib(off.HostBytes):F2} |");
            return 0;
        }
    }

    /// <summary>MemAvailable, or less where a cgroup (v2) limit leaves less.</summary>
    private static long HostAvailableBytes()
    {
        long avail = 0;
        foreach (var line in File.ReadLines("/proc/meminfo"))
            if (line.StartsWith("MemAvailable:"))
                avail = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        try
        {
            string max = File.ReadAllText("/sys/fs/cgroup/memory.max").Trim(), cur = File.ReadAllText("/sys/fs/cgroup/memory.current").Trim();
            if (max != "max") avail = Math.Min(avail, long.Parse(max) - long.Parse(cur));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { /* no cgroup v2 limit readable */ }
        return avail;
    }

    private static double Gib(long bytes) => bytes / (double)(1L << 30);

    private static int Argmax(float[] x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }
}
