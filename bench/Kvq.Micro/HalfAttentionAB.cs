using System.Diagnostics;
using Kvq.Cache.Attention;

namespace Kvq.Micro;

/// <summary>
/// --quick-half-attention: the f16 cache's decode kernels (<see cref="HalfTileMath.Scores"/> / Accumulate) against
/// the per-row kernels they replaced, over one KV head of 4000 tokens in 32-token blocks at books-19m's head dim 64
/// and GQA group 3; interleaved rounds, best of each, ns per cached token.
/// </summary>
public static class HalfAttentionAB
{
    public static void Run(int rounds, int nq = 3, int d = 64)
    {
        const int Tokens = 4000, Block = 32;
        int blocks = Tokens / Block;
        var rng = new Random(7);
        var tiles = Enumerable.Range(0, blocks).Select(_ => Enumerable.Range(0, Block * d).Select(_ => (Half)(rng.NextDouble() * 4 - 2)).ToArray()).ToArray();
        var q = Enumerable.Range(0, nq * d).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var w = Enumerable.Range(0, nq * Block).Select(_ => (float)rng.NextDouble() / Block).ToArray();
        var scores = new float[nq * Block];
        var acc = new float[nq * d];
        var kernels = new (string Name, Action Run)[]
        {
            ("scores, per row (old)", () => { foreach (var t in tiles) HalfTileMath.ScoresPerRow(t, Block, d, q, nq, scores); }),
            ("scores, keys widened once (new)", () => { foreach (var t in tiles) HalfTileMath.Scores(t, Block, d, q, nq, scores); }),
            ("accumulate, per row (old)", () => { foreach (var t in tiles) HalfTileMath.AccumulatePerRow(t, Block, d, w, nq, acc); }),
            ("accumulate, values widened once (new)", () => { foreach (var t in tiles) HalfTileMath.Accumulate(t, Block, d, w, nq, acc); }),
        };
        var best = Enumerable.Repeat(double.MaxValue, kernels.Length).ToArray();
        for (int round = 0; round < rounds; round++)
            for (int k = 0; k < kernels.Length; k++)
            {
                long t0 = Stopwatch.GetTimestamp();
                kernels[k].Run();
                best[k] = Math.Min(best[k], Stopwatch.GetElapsedTime(t0).TotalNanoseconds / Tokens);
            }
        Console.WriteLine($"f16 cache, head dim {d}, {nq} query rows, {Tokens} tokens, ns per cached token (best of {rounds} rounds); load {File.ReadAllText("/proc/loadavg").Trim()}");
        Console.WriteLine("| kernel | ns/token |");
        Console.WriteLine("|---|---:|");
        foreach (var (k, i) in kernels.Select((k, i) => (k, i))) Console.WriteLine($"| {k.Name} | {best[i]:F2} |");
    }
}
