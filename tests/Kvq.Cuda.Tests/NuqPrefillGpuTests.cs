using Kvq.Cache;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cuda.Attention;
using Kvq.Cuda.Model;
using Kvq.Model;
using Kvq.Tensors;
using Xunit.Abstractions;

namespace Kvq.Cuda.Tests;

/// <summary>
/// Issue 19's KVQuant prefill at f16 speed (<see cref="NuqPrefill"/>): a chunk's new tokens encoded in one launch, the
/// past decoded once per chunk and layer into f16 rows, the f16 tensor-core kernel over them. Held to the reference
/// path (<see cref="NuqPrefill.Tiles"/>: decoding inside attention), to the f16 cache and to the CPU KVQuant cache, on
/// a 7B-like layer shape (the contiguous decode layout) and on books-19m (the model's paged layout, head dim 64, 3
/// query heads per KV head), nuq4-1% and nuq2-1%, chunks of odd sizes that cross 8-token tiles, 64-token attention
/// tiles and 128-token blocks.
/// </summary>
public class NuqPrefillGpuTests(ITestOutputHelper output)
{
    /// <summary>Chunk sizes: 0-76 (the sink inside), 77-206 (crosses 128), one decode token, 208-268 (crosses 256),
    /// 269-468 (crosses 384 and 448), 469-501.</summary>
    private static readonly int[] Chunks = [77, 130, 1, 61, 200, 33];

    /// <summary>The attention shape of LLaMA-7B (32 heads x 128, MHA) in a 2-layer model with small FFN and vocab.</summary>
    internal static readonly ModelConfig SevenBLike = new()
    {
        Architecture = "llama", Dim = 4096, Layers = 2, Heads = 32, KvHeads = 32, HeadDim = 128, FfnDim = 256, VocabSize = 512,
        NormEps = 1e-5f, RopeBase = 10000f, RopeDims = 128, RopeStyle = RopeStyle.Normal, ContextLength = 4096,
    };

    [GpuTheory]
    [InlineData("nuq4-1%")]
    [InlineData("nuq2-1%")]
    public void SevenBLikeLayerAttentionMatchesTilesF16AndCpu(string spec)
    {
        using var gpu = CudaTransformer.CreateRandom(SevenBLike, new CudaModelOptions(CudaWeightType.F16, MaxBatch: 256, DecodeGraphs: false));
        var profile = SyntheticKvQuantProfile.Create(SevenBLike.Layers, SevenBLike.KvHeads, SevenBLike.HeadDim);
        CompareAttention(gpu, spec, profile, seed: 31, expectContiguous: true);
    }

    [GpuTheory]
    [InlineData("nuq4-1%")]
    [InlineData("nuq2-1%")]
    public void BooksAttentionMatchesTilesF16AndCpu(string spec)
    {
        using var loaded = ModelLoader.Load(CudaModelGpuTests.BooksGguf());
        var cfg = loaded.Weights.Config;
        using var gpu = CudaTransformer.Load(loaded.Weights, new CudaModelOptions(CudaWeightType.F16, MaxBatch: 256, DecodeGraphs: false));
        CompareAttention(gpu, spec, SyntheticKvQuantProfile.Create(cfg.Layers, cfg.KvHeads, cfg.HeadDim), seed: 37, expectContiguous: false);
    }

    [GpuTheory]
    [InlineData("nuq4-1%")]
    [InlineData("nuq2-1%")]
    public void BooksLogitsDecodedOnceEqualTilesAndF16ChunkStartsAsF16(string spec)
    {
        using var loaded = ModelLoader.Load(CudaModelGpuTests.BooksGguf());
        var cfg = loaded.Weights.Config;
        const int chunk = 48;   // 131 tokens: chunks 0-47, 48-95 (crosses 64), 96-130 (crosses 128)
        using var gpu = CudaTransformer.Load(loaded.Weights, new CudaModelOptions(CudaWeightType.F16, MaxBatch: chunk, DecodeGraphs: false));
        int seed = 41;
        output.WriteLine($"seed {seed}, {spec}, device {gpu.Device}");
        var rng = new Random(seed);
        var ids = new int[131];
        ids[0] = 1;
        for (int i = 1; i < ids.Length; i++) ids[i] = rng.Next(3, cfg.VocabSize);
        var nuq = new KvCacheConfig(spec, spec, 32, 1, SyntheticKvQuantProfile.Create(cfg.Layers, cfg.KvHeads, cfg.HeadDim));
        float[] Run(NuqPrefill mode, KvCacheConfig kv)
        {
            gpu.NuqPrefill = mode;
            using var s = (CudaKvSequence)gpu.CreateSequence(kv, ids.Length);
            var all = new float[ids.Length * cfg.VocabSize];
            gpu.Forward(ids, s, default, all);
            return all;
        }
        var tiles = Run(NuqPrefill.Tiles, nuq);
        var once = Run(NuqPrefill.Decoded, nuq);
        var f16Chunk = Run(NuqPrefill.F16Chunk, nuq);
        var f16 = Run(NuqPrefill.Tiles, new KvCacheConfig("f16", "f16"));
        gpu.NuqPrefill = NuqPrefill.Tiles;
        double onceVsTiles = RelL2(once, tiles), firstVsF16 = RelL2(f16Chunk.AsSpan(0, chunk * cfg.VocabSize), f16.AsSpan(0, chunk * cfg.VocabSize));
        double chunkVsTiles = RelL2(f16Chunk, tiles), f16VsTiles = RelL2(f16, tiles);
        output.WriteLine($"logits rel L2: decoded once vs tiles {onceVsTiles:E2}; f16 chunk vs f16 cache, first chunk {firstVsF16:E2}; " +
                         $"f16 chunk vs tiles {chunkVsTiles:E2} (f16 cache vs tiles {f16VsTiles:E2})");
        Assert.True(onceVsTiles < 1e-4, $"decoded once vs tiles: logits rel L2 {onceVsTiles:E2}");
        // The first chunk has no past: with the chunk in f16 it is the f16 cache's computation, kernel for kernel.
        Assert.True(firstVsF16 < 1e-6, $"first chunk in f16 vs the f16 cache: logits rel L2 {firstVsF16:E2}");
        Assert.True(chunkVsTiles < 1.0, $"f16 chunk vs tiles: logits rel L2 {chunkVsTiles:E2}");
    }

    [GpuTheory]
    [InlineData(4, false)]
    [InlineData(2, false)]
    [InlineData(3, true)]
    public void RowAppendsWriteTheBytesOfTokenByTokenAppends(int bits, bool dense)
    {
        using var ctx = CudaContext.Create();
        using var kernels = new DecodeKernels(ctx);
        var shape = new DecodeShape(8, 1, 128);
        int seed = 43;
        output.WriteLine($"seed {seed}, {bits} bits, {(dense ? "dense" : "slots")}");
        var rng = new Random(seed);
        var kz = Enumerable.Range(0, shape.KvHeads * 128).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        var kr = Enumerable.Range(0, shape.KvHeads * 128).Select(_ => 0.5f + (float)rng.NextDouble()).ToArray();
        var profile = new NuqLayerProfile(shape.KvHeads, 128, kz, kr, NuqCodebook.Uniform(bits), NuqCodebook.Uniform(bits));
        var layout = dense ? NuqLayout.Dense : NuqLayout.Slots;
        int[] pieces = [5, 13, 1, 30, 77, 2, 9];   // starts at 0, 5, 18, 19, 49, 126, 128: inside and across 8-token tiles
        int total = pieces.Sum(), row = shape.KvHeads * 128;
        var k = RandomRows(rng, total, shape.KvHeads, 128);
        var v = RandomRows(rng, total, shape.KvHeads, 128);
        using var dk = ctx.Upload(k);
        using var dv = ctx.Upload(v);
        using var one = new NuqLayerCache(kernels, shape, profile, 256, 1, layout);
        using var rows = new NuqLayerCache(kernels, shape, profile, 256, 1, layout);
        for (int t = 0; t < total; t++) one.Append(dk.Pointer + (ulong)(t * row * 4L), dv.Pointer + (ulong)(t * row * 4L), 1);
        int at = 0;
        foreach (int p in pieces)
        {
            rows.AppendRows(dk.Pointer + (ulong)(at * row * 4L), dv.Pointer + (ulong)(at * row * 4L), p);
            at += p;
        }
        ctx.Synchronize();
        Assert.Equal(total, rows.Tokens);
        Assert.Equal(one.DownloadAll(), rows.DownloadAll());
    }

    /// <summary>
    /// Per chunk and layer, the same keys, values and queries through five sequences: KVQuant with the tiles (the
    /// reference), decoded once, the chunk in f16; the f16 cache; the CPU's KVQuant cache. Decoded once must equal the
    /// tiles (the same f16 tiles); the f16 chunk must equal the f16 cache while there is no past and lie closer to it
    /// than the tiles afterwards (only the past is quantized); both stay about as near the CPU's cache as the tiles.
    /// </summary>
    private void CompareAttention(CudaTransformer gpu, string spec, KvQuantProfile profile, int seed, bool expectContiguous)
    {
        var shape = gpu.KvShape;
        var config = new KvCacheConfig(spec, spec, 32, 1, profile);
        int cap = Chunks.Sum() + 8;
        output.WriteLine($"seed {seed}, {spec}, {shape.Layers} layers, {shape.Heads}/{shape.KvHeads} heads x {shape.HeadDim}, device {gpu.Device}");
        var modes = new[] { NuqPrefill.Tiles, NuqPrefill.Decoded, NuqPrefill.F16Chunk };
        var nuq = modes.Select(_ => (CudaKvSequence)gpu.CreateSequence(config, cap)).ToArray();
        using var f16 = (CudaKvSequence)gpu.CreateSequence(new KvCacheConfig("f16", "f16"), cap);
        using var cpu = new PagedKvCache(shape, config).CreateSequence();
        try
        {
            Assert.Equal(expectContiguous, !nuq[0].Cache.Paged);
            var rng = new Random(seed);
            var par = new Parallelism(2);
            int past = 0;
            foreach (int n in Chunks)
            {
                var k = Keys(rng, n, shape.KvHeads, shape.HeadDim);
                var v = RandomRows(rng, n, shape.KvHeads, shape.HeadDim);
                var q = RandomRows(rng, n, shape.Heads, shape.HeadDim);
                var ids = Enumerable.Range(0, n).Select(_ => 3 + rng.Next(100)).ToArray();
                cpu.BeginChunk(ids);   // the CPU cache takes its blocks here
                foreach (var s in nuq) s.BeginChunk(ids);
                f16.BeginChunk(ids);
                for (int l = 0; l < shape.Layers; l++)
                {
                    var outs = new float[modes.Length][];
                    for (int m = 0; m < modes.Length; m++)
                    {
                        gpu.NuqPrefill = modes[m];
                        outs[m] = new float[n * shape.QDim];
                        nuq[m].Append(l, k, v, n);
                        nuq[m].Attend(l, q, n, outs[m], par);
                    }
                    gpu.NuqPrefill = NuqPrefill.Tiles;
                    var o16 = new float[n * shape.QDim];
                    f16.Append(l, k, v, n);
                    f16.Attend(l, q, n, o16, par);
                    var oc = new float[n * shape.QDim];
                    cpu.Append(l, k, v, n);
                    cpu.Attend(l, q, n, oc, par);
                    double once = RelL2(outs[1], outs[0]), chunkF16 = RelL2(outs[2], o16), tilesF16 = RelL2(outs[0], o16);
                    double tilesCpu = RelL2(outs[0], oc), onceCpu = RelL2(outs[1], oc), chunkCpu = RelL2(outs[2], oc);
                    output.WriteLine($"tokens {past}..{past + n - 1}, layer {l}: decoded once vs tiles {once:E2}; vs the f16 cache: f16 chunk {chunkF16:E2}, " +
                                     $"tiles {tilesF16:E2}; vs the CPU: tiles {tilesCpu:E2}, decoded once {onceCpu:E2}, f16 chunk {chunkCpu:E2}");
                    // The same f16 tiles (expected bit for bit; 1e-4 leaves room for a compiler that contracts the
                    // tiles' RoPE product differently in the two kernels: an f16 step in a few keys).
                    Assert.True(once < 1e-4, $"tokens {past}..: decoded once vs tiles rel L2 {once:E2}");
                    // The GPU's KVQuant layout is not the CPU's (fixed outlier slots that clamp vs sparse rows that keep
                    // every outlier; random keys on a hand-made profile have many): tiles lie 0.09 (nuq4-1%) to 0.34
                    // (nuq2-1%) from the CPU on these inputs (run 45, H100). The new modes must stay as near as the
                    // tiles: decoded once to within its tiny distance from the tiles, the f16 chunk (only its past
                    // quantized, where the CPU quantizes the chunk too) within 1.5x the tiles' distance.
                    Assert.True(onceCpu <= tilesCpu + 1e-3, $"tokens {past}..: decoded once vs the CPU rel L2 {onceCpu:E2}, tiles {tilesCpu:E2}");
                    Assert.True(chunkCpu < 1.5 * tilesCpu + 1e-3, $"tokens {past}..: f16 chunk vs the CPU rel L2 {chunkCpu:E2}, tiles {tilesCpu:E2}");
                    if (n == 1) continue;   // a decode step: every mode takes the decode kernels
                    if (past == 0) Assert.True(chunkF16 < 1e-6, $"first chunk in f16 vs the f16 cache rel L2 {chunkF16:E2}");
                    else Assert.True(chunkF16 < tilesF16, $"tokens {past}..: the f16 chunk ({chunkF16:E2}) is not nearer the f16 cache than the tiles ({tilesF16:E2})");
                }
                foreach (var s in nuq) s.Commit(n);
                f16.Commit(n);
                cpu.Commit(n);
                past += n;
            }
        }
        finally
        {
            gpu.NuqPrefill = NuqPrefill.Tiles;
            foreach (var s in nuq) s.Dispose();
        }
    }

    /// <summary>Keys near the synthetic profile's zeros (|u| rarely over 1) plus two large channels per token and KV head:
    /// at most a few outliers a token, so the device's 4 key slots hold what the CPU codec keeps.</summary>
    private static float[] Keys(Random rng, int n, int heads, int d)
    {
        var x = new float[n * heads * d];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() - 0.5) * 0.1f;
        for (int t = 0; t < n * heads; t++)
            for (int j = 0; j < 2; j++) x[t * d + rng.Next(d)] = (rng.Next(2) * 2 - 1) * (2f + (float)rng.NextDouble());
        return x;
    }

    private static float[] RandomRows(Random rng, int n, int heads, int d)
    {
        var x = new float[n * heads * d];
        for (int i = 0; i < x.Length; i++) x[i] = (float)((rng.NextDouble() + rng.NextDouble() + rng.NextDouble() - 1.5) * 1.2);
        return x;
    }

    private static double RelL2(ReadOnlySpan<float> got, ReadOnlySpan<float> want)
    {
        double num = 0, den = 0;
        for (int i = 0; i < want.Length; i++) { double d = got[i] - want[i]; num += d * d; den += (double)want[i] * want[i]; }
        return Math.Sqrt(num / den);
    }
}
