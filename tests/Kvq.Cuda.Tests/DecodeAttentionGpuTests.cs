using Kvq.Cuda.Attention;
using Kvq.KernelLab;

namespace Kvq.Cuda.Tests;

/// <summary>The lab's check as a test: each cache format and kernel version against the CPU codec reference
/// (nuqB-1% layouts and the dense nuqB layout without outlier slots).</summary>
public class DecodeAttentionGpuTests
{
    [GpuFact]
    public void EveryVersionMatchesTheCpuCodecReference()
    {
        using var ctx = CudaContext.Create();
        using var kernels = new DecodeKernels(ctx);
        using var versions = new DecodeKernelVersions(kernels);   // v9 from production's module, the rest from the lab's
        using var attn = new DecodeAttention(kernels);
        foreach (var shape in new[] { new DecodeShape(4, 1), new DecodeShape(2, 4) })
        {
            var profiles = SyntheticProfile.FitFormats(kernels, shape.KvHeads, 0x1234567u, 0x89abcdefu, tokens: 256);
            foreach (var (bits, version, layout) in Cases)
            {
                attn.Split = versions.For(version);
                const long n = 517;
                var profile = bits == 16 ? null : profiles[$"nuq{bits}{Suffix(layout)}"];
                using GpuLayerCache cache = bits == 16
                    ? new F16LayerCache(kernels, shape, n, 0x1234567u, 0x89abcdefu, Math.Log2(10000))
                    : new NuqLayerCache(kernels, shape, profile!, n, 1, 0x1234567u, 0x89abcdefu, layout);
                int positions = (int)n + cache.Sink;
                var q = new float[shape.QueryHeads * 128];
                var rng = new Random(bits * 10 + version);
                for (int i = 0; i < q.Length; i++) q[i] = (float)(rng.NextDouble() * 2 - 1);
                using var qd = ctx.Upload(q);
                using var outd = ctx.Allocate(q.Length * 4);
                outd.Fill(0xff);
                attn.Run(cache, qd, outd);
                ctx.Synchronize();
                var got = outd.Download<float>(q.Length);
                var rawK = SyntheticProfile.Materialize(kernels, 0x1234567u, shape.KvHeads, 0, positions);
                var rawV = SyntheticProfile.Materialize(kernels, 0x89abcdefu, shape.KvHeads, 0, positions);
                var nuq = cache as NuqLayerCache;
                var (k, v) = CpuReference.DecodedCache(nuq?.KeySpec ?? "f16", profile, rawK, rawV, shape.KvHeads, positions, cache.Sink,
                    nuq?.ValueSpec, nuq?.KeyListWords > 0 ? DecodeShape.KeyListWords - 1 : 0);
                var want = CpuReference.Attention(q, k, v, shape.KvHeads, shape.Group, positions);
                var (rel, _) = CpuReference.Compare(got, want);
                double tolerance = DecodeKernelVersions.CheckTolerance(version, shape.Group);
                Assert.True(rel < tolerance, $"{shape} {cache.Name} v{version}: relative error {rel} (tolerance {tolerance})");
            }
        }
    }

    /// <summary>(bits, version, layout) of each check (16 bits: the f16 cache), run at G = 1 and G = 4.</summary>
    internal static readonly (int Bits, int Version, NuqLayout Layout)[] Cases = Build();

    private static (int, int, NuqLayout)[] Build()
    {
        var S = NuqLayout.Slots;
        return [(16, 1, S), (4, 1, S), (4, 2, S), (4, 3, S), (4, 4, S), (4, 5, S), (4, 6, S), (3, 6, S), (2, 6, S),
            (4, 6, NuqLayout.Dense), (3, 6, NuqLayout.Dense), (2, 6, NuqLayout.Dense), (4, 6, NuqLayout.SparseKeys), (2, 6, NuqLayout.SparseKeys),
            (4, 7, S), (3, 7, S), (2, 7, S), (4, 7, NuqLayout.Dense), (3, 7, NuqLayout.Dense), (2, 7, NuqLayout.Dense), (4, 7, NuqLayout.SparseKeys),
            (3, 7, NuqLayout.SparseKeys), (2, 7, NuqLayout.SparseKeys), (4, 8, S), (3, 8, S), (2, 8, S), (4, 8, NuqLayout.Dense),
            (2, 8, NuqLayout.Dense), (3, 8, NuqLayout.SparseKeys), (4, 9, S), (3, 9, S), (2, 9, S), (4, 9, NuqLayout.Dense), (3, 9, NuqLayout.Dense),
            (4, 9, NuqLayout.SparseKeys), (3, 9, NuqLayout.SparseKeys), (4, 10, S), (4, 10, NuqLayout.Dense), (4, 10, NuqLayout.SparseKeys),
            (4, 11, S), (3, 11, S), (2, 11, S), (4, 11, NuqLayout.Dense), (3, 11, NuqLayout.Dense), (2, 11, NuqLayout.Dense),
            (4, 11, NuqLayout.SparseKeys), (3, 11, NuqLayout.SparseKeys), (2, 11, NuqLayout.SparseKeys),
            (4, 12, S), (3, 12, S), (2, 12, S), (4, 12, NuqLayout.Dense), (3, 12, NuqLayout.Dense), (2, 12, NuqLayout.Dense),
            (4, 12, NuqLayout.SparseKeys), (3, 12, NuqLayout.SparseKeys), (2, 12, NuqLayout.SparseKeys),
            (4, 13, S), (3, 13, S), (2, 13, S), (4, 13, NuqLayout.Dense), (2, 13, NuqLayout.Dense), (3, 13, NuqLayout.SparseKeys),
            (4, 14, S), (3, 14, S), (2, 14, NuqLayout.Dense),
            (4, 15, S), (4, 15, NuqLayout.Dense), (4, 15, NuqLayout.SparseKeys),
            (4, 16, S), (4, 16, NuqLayout.Dense), (4, 16, NuqLayout.SparseKeys),
            (4, 17, S), (4, 17, NuqLayout.Dense), (4, 17, NuqLayout.SparseKeys),
            (4, 18, S), (4, 18, NuqLayout.Dense), (4, 18, NuqLayout.SparseKeys)];
    }

    internal static string Suffix(NuqLayout layout) => layout switch { NuqLayout.Dense => "d", NuqLayout.SparseKeys => "s", _ => "" };
}

public class AppendGpuTests
{
    [GpuFact]
    public void AppendingInPiecesGivesTheBulkEncodersBytes()
    {
        using var ctx = CudaContext.Create();
        using var kernels = new DecodeKernels(ctx);
        var shape = new DecodeShape(2, 4);
        var profiles = SyntheticProfile.FitFormats(kernels, shape.KvHeads, 1u, 2u, tokens: 256);
        foreach (var (bits, layout) in new[] { (2, NuqLayout.Slots), (3, NuqLayout.Slots), (4, NuqLayout.Slots), (2, NuqLayout.Dense), (4, NuqLayout.Dense),
            (2, NuqLayout.SparseKeys), (3, NuqLayout.SparseKeys) })
        {
            const long n = 301;
            var profile = profiles[$"nuq{bits}{DecodeAttentionGpuTests.Suffix(layout)}"];
            using var bulk = new NuqLayerCache(kernels, shape, profile, n, 1, 1u, 2u, layout);
            using var inc = new NuqLayerCache(kernels, shape, profile, n, 1, layout);
            inc.FillSyntheticSink(1u, 2u);
            long at = 0;
            foreach (int c in new[] { 1, 7, 8, 100, 3, 182 })
            {
                var k = SyntheticProfile.Materialize(kernels, 1u, shape.KvHeads, 1 + at, c);
                var v = SyntheticProfile.Materialize(kernels, 2u, shape.KvHeads, 1 + at, c);
                using var kb = ctx.Upload(k);
                using var vb = ctx.Upload(v);
                inc.Append(kb, vb, c);
                at += c;
            }
            Assert.Equal(n, inc.Tokens);
            Assert.Equal(bulk.DownloadAll(), inc.DownloadAll());
            using var more = ctx.Allocate(4);
            Assert.Throws<ArgumentException>(() => inc.Append(more, more, 1));
        }
    }
}
