using System.Diagnostics;
using Kvq.Model.Loading;
using Kvq.Tensors;
using Kvq.Tensors.Quant;

namespace Kvq.Micro;

/// <summary>
/// --quick-matvec: one decode token's weight products of a real model (every matrix once, in the forward pass's
/// order, so the bytes stream from L3/memory as in decode), old kernel (one <see cref="RowKernels.Dot"/> per row, as
/// MatVec ran before the finite-f16 path) against <see cref="WeightMatrix.MatVec"/> at 1 and 2 threads, interleaved
/// rounds, best of each; results checked bitwise equal. Then each distinct shape alone, hot in L2.
/// </summary>
public static class MatVecSweep
{
    public static unsafe void Run(string modelPath, int rounds)
    {
        using var weights = GgufModelLoader.Load(modelPath);
        var mats = new List<WeightMatrix>();
        foreach (var l in weights.Layers) mats.AddRange([l.Wq, l.Wk, l.Wv, l.Wo, .. new[] { l.WGate, l.WUp, l.WDown }.OfType<WeightMatrix>()]);
        mats.Add(weights.Output);
        long bytes = mats.Sum(m => m.ByteSize);
        var rng = new Random(3);
        var x = new float[mats.Max(m => m.Cols)];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        var yOld = mats.Select(m => new float[m.Rows]).ToArray();
        var yNew = mats.Select(m => new float[m.Rows]).ToArray();
        using var p1 = new Parallelism(1);
        using var p2 = new Parallelism(2);
        // Quantized matrices: "old" is MatVec with Int8MatVec off (the float kernels over the Q8_0-rounded activations).
        void Old(int i)
        {
            var m = mats[i];
            var xs = x.AsSpan(0, m.Cols);
            if (m.ActivationType != null)
            {
                Int8MatVec.Enabled = false;
                m.MatVec(xs, yOld[i], p1);
                Int8MatVec.Enabled = true;
                return;
            }
            for (int r = 0; r < m.Rows; r++) yOld[i][r] = RowKernels.Dot(m.Type, m.Row(r), xs);
        }
        var names = new[] { "old, 1 thread", "new, 1 thread", "new, 2 threads" };
        var actions = new Action[]
        {
            () => { for (int i = 0; i < mats.Count; i++) Old(i); },
            () => { for (int i = 0; i < mats.Count; i++) mats[i].MatVec(x.AsSpan(0, mats[i].Cols), yNew[i], p1); },
            () => { for (int i = 0; i < mats.Count; i++) mats[i].MatVec(x.AsSpan(0, mats[i].Cols), yNew[i], p2); },
        };
        var best = Enumerable.Repeat(double.MaxValue, actions.Length).ToArray();
        for (int w = 0; w < 50; w++) foreach (var a in actions) a();
        for (int round = 0; round < rounds; round++)
            for (int a = 0; a < actions.Length; a++)
            {
                long t0 = Stopwatch.GetTimestamp();
                actions[a]();
                best[a] = Math.Min(best[a], Stopwatch.GetElapsedTime(t0).TotalMicroseconds);
            }
        for (int i = 0; i < mats.Count; i++)
            if (mats[i].ActivationType != null)
            {
                for (int r = 0; r < mats[i].Rows; r++)
                    if (Math.Abs(yOld[i][r] - yNew[i][r]) > 1e-4f * (1 + Math.Abs(yOld[i][r])))
                        throw new InvalidOperationException($"{mats[i].Name} row {r}: new MatVec {yNew[i][r]} vs old {yOld[i][r]}");
            }
            else if (!yOld[i].AsSpan().SequenceEqual(yNew[i])) throw new InvalidOperationException($"{mats[i].Name}: new MatVec differs from the per-row dot");
        Console.WriteLine($"{Path.GetFileName(modelPath)}: {mats.Count} matrices, {bytes / 1e6:F2} MB of {string.Join("/", mats.Select(m => m.Type).Distinct())} weights per token; best of {rounds} rounds; " +
                          $"load {File.ReadAllText("/proc/loadavg").Trim()}");
        Console.WriteLine("| kernel | us per token's weights | GB/s |");
        Console.WriteLine("|---|---:|---:|");
        for (int a = 0; a < actions.Length; a++) Console.WriteLine($"| {names[a]} | {best[a]:F0} | {bytes / 1e3 / best[a]:F1} |");

        Console.WriteLine();
        Console.WriteLine("Each shape alone, repeated (hot in L2 where it fits), 1 thread, us per product:");
        Console.WriteLine("| shape | old | new | old/new |");
        Console.WriteLine("|---|---:|---:|---:|");
        foreach (var g in mats.Select((m, i) => (m, i)).GroupBy(t => (t.m.Rows, t.m.Cols)))
        {
            int i = g.First().i;
            double o = double.MaxValue, n = double.MaxValue;
            for (int round = 0; round < rounds * 4; round++)
            {
                long t0 = Stopwatch.GetTimestamp();
                for (int k = 0; k < 10; k++) Old(i);
                o = Math.Min(o, Stopwatch.GetElapsedTime(t0).TotalMicroseconds / 10);
                t0 = Stopwatch.GetTimestamp();
                for (int k = 0; k < 10; k++) mats[i].MatVec(x.AsSpan(0, mats[i].Cols), yNew[i], p1);
                n = Math.Min(n, Stopwatch.GetElapsedTime(t0).TotalMicroseconds / 10);
            }
            Console.WriteLine($"| {g.Key.Rows} x {g.Key.Cols} | {o:F1} | {n:F1} | {o / n:F2}x |");
        }
    }
}
