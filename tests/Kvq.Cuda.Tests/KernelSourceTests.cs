using Kvq.Cuda.Attention;

namespace Kvq.Cuda.Tests;

public class KernelSourceTests
{
    [Fact]
    public void EveryKernelTheHostLaunchesIsDefinedInTheEmbeddedSources()
    {
        var attn = KernelSources.Read("decode_attention.cu");
        var enc = KernelSources.Read("kv_encode.cu");
        foreach (int g in new[] { 1, 4 })
        {
            Assert.Contains($"F16_ENTRY({g})", attn);
            foreach (int b in new[] { 2, 3, 4 })
                Assert.Contains($"NUQ_VERSIONS({b})", attn);
        }
        foreach (var macro in new[] { "NUQ_ENTRY(B, B, 1, 1, 1)", "NUQ_ENTRY(B, B, 1, 2, 4)", "NUQ_V3(B, 1, 4)", "NUQ_V4(B, 1, 2)", "NUQ_V5(B, 1, 3)", "NUQ_V6(B, 1, 3)",
            "NUQ_V6_DENSE(B, 1, 3)", "NUQ_V6_DENSE(B, 4, 2)", "NUQ_V6_SPARSE(B, 1, 3)", "NUQ_V6_SPARSE(B, 4, 2)", "_r##VER", "_r6_dense", "_r6_sparse",
            "NUQ_V7(4, 1, 2)", "NUQ_V7(4, 4, 2)", "NUQ_V7(3, 1, 2)", "NUQ_V7(3, 4, 2)", "NUQ_V7(2, 1, 3)", "NUQ_V7(2, 4, 2)", "_r##VER##SUFFIX",
            "NUQ_V7_ANY(B, G, MINB, VER, _dense, 0, 0, 0)", "NUQ_V7_ANY(B, G, MINB, VER, _sparse, 0, 0, 48)",
            "NUQ_V7_LAYOUTS(B, G, MINB, 7) NUQ_V7_LAYOUTS(B, G, MINB, 8)", "NUQ_V9(4) NUQ_V9(3) NUQ_V9(2)", "NUQ_V7_LAYOUTS(4, 1, 3, 10)",
            "NUQ_V7_LAYOUTS(4, 4, 2, 10)", "#define NUQ_V11(B) NUQ_V7_LAYOUTS(B, 4, 2, 11)", "NUQ_V11(4) NUQ_V11(3) NUQ_V11(2)",
            "NUQ_V7_LAYOUTS(4, 4, 2, 12) NUQ_V7_LAYOUTS(3, 4, 2, 12) NUQ_V7_LAYOUTS(2, 4, 2, 12)" })
            Assert.Contains(macro, attn);
        Assert.Contains("attn_reduce", attn);
        foreach (var name in new[] { "kv_materialize", "kv_write_f16", "ENC(2)", "ENC(3)", "ENC(4)", "ENC_L(B, 0, 0, _dense)", "KLIST_ENC(2)", "#define KLIST 48" })
            Assert.Contains(name, enc);
        Assert.Equal(48, DecodeShape.KeyListWords);
        Assert.Equal(9, DecodeKernels.LatestVersion);
    }

    [Fact]
    public void VersionsElevenAndTwelveRunVersionNineForMhaAndTheirOwnKernelsForGqa()
    {
        Assert.Equal("attn_nuq_k4_v4_g1_r9", DecodeKernels.AttentionName(4, 4, 1, 11));
        Assert.Equal("attn_nuq_k2_v2_g1_r9_dense", DecodeKernels.AttentionName(2, 2, 1, 12, NuqLayout.Dense));
        Assert.Equal("attn_nuq_k3_v3_g4_r12_sparse", DecodeKernels.AttentionName(3, 3, 4, 12, NuqLayout.SparseKeys));
        Assert.Equal("attn_nuq_k4_v4_g4_r11", DecodeKernels.AttentionName(4, 4, 4, 11));
        Assert.Equal("attn_nuq_k4_v4_g1_r10", DecodeKernels.AttentionName(4, 4, 1, 10));
        Assert.Equal("attn_f16_g4", DecodeKernels.AttentionName(16, 16, 4, 12));
        Assert.Throws<NotSupportedException>(() => DecodeKernels.AttentionName(4, 4, 4, 5, NuqLayout.Dense));
        var attn = KernelSources.Read("decode_attention.cu");
        Assert.DoesNotContain("NUQ_V7_LAYOUTS(B, 1, 3, 11)", attn);
        Assert.DoesNotContain("NUQ_V7_LAYOUTS(4, 1, 3, 12)", attn);
    }

    [Fact]
    public void AMissingSourceNamesWhatIsThere()
    {
        var e = Assert.Throws<FileNotFoundException>(() => KernelSources.Read("nope.cu"));
        Assert.Contains("decode_attention.cu", e.Message);
    }

    [Fact]
    public void HostStructMatchesTheKernelsAttnArgs()
    {
        // int n, sink, chunksPerSplit, splits; float scale; (pad) double log2base
        Assert.Equal(32, System.Runtime.InteropServices.Marshal.SizeOf<AttnArgs>());
        Assert.Equal(24, (int)System.Runtime.InteropServices.Marshal.OffsetOf<AttnArgs>(nameof(AttnArgs.Log2Base)));
    }

    [Fact]
    public void StageBytesMatchWhatTheProfilerSaw()
    {
        // ncu on an H200 reported 76.80 KB of dynamic shared memory for v4's two nuq4 stages.
        Assert.Equal(76800, DecodeAttention.StageBytes(4));
        Assert.True(DecodeAttention.StageBytes(2) < DecodeAttention.StageBytes(3));
        // The dense layout's stage: codes and the value zero/range words only (2 bits: 2 x 8192 + 1024 per stage).
        Assert.Equal(2 * (2 * 8192 + 1024), DecodeAttention.StageBytes(2, 0, 0));
        Assert.Equal(2 * (2 * 8192 + 1024 + 192), DecodeAttention.StageBytes(2, 0, 0, DecodeShape.KeyListWords));
        // v5/v6 keep one stage; v7 adds its pair tables (Tabs7): 4 bits a 256-entry float2 value table in 16 copies,
        // 3 bits 64 entries in 32 copies plus two per-lane key tables, 2 bits 16 entries.
        Assert.Equal(76800 / 2, DecodeAttention.SharedBytes(6, 4, 4, 2, 0));
        Assert.Equal(76800 / 2 + 256 * 16 * 8, DecodeAttention.SharedBytes(7, 4, 4, 2, 0));
        Assert.Equal(DecodeAttention.StageBytes(3) / 2 + 64 * 32 * 8 + 2 * 64 * 32 * 8, DecodeAttention.SharedBytes(7, 3, 4, 2, 0));
        Assert.Equal(2 * 8192 + 1024 + 16 * 32 * 8 + 2 * 16 * 32 * 8, DecodeAttention.SharedBytes(7, 2, 0, 0, 0));
        Assert.True(DecodeAttention.SharedBytes(7, 4, 4, 2, 0) < 227 * 1024 / 2, "two v7 blocks fit one SM");
        // v9: key pairs at 2 bits only, value pairs at 2-3 bits (4 bits: v6's single lookups); v10: 4-bit value pairs in 8 copies.
        Assert.Equal(76800 / 2, DecodeAttention.SharedBytes(9, 4, 4, 2, 0));
        Assert.Equal(DecodeAttention.StageBytes(3) / 2 + 64 * 32 * 8, DecodeAttention.SharedBytes(9, 3, 4, 2, 0));
        Assert.Equal(DecodeAttention.SharedBytes(8, 2, 4, 2, 0), DecodeAttention.SharedBytes(9, 2, 4, 2, 0));
        Assert.Equal(76800 / 2 + 256 * 8 * 8, DecodeAttention.SharedBytes(10, 4, 4, 2, 0));
        // v11/v12: v9's tables, and for a GQA group 8 warps x 8 tokens x 128 f16 rotated keys; MHA is v9's kernel.
        Assert.Equal(DecodeAttention.SharedBytes(9, 3, 4, 2, 0), DecodeAttention.SharedBytes(11, 3, 4, 2, 0, group: 1));
        Assert.Equal(DecodeAttention.SharedBytes(9, 4, 4, 2, 0) + 16384, DecodeAttention.SharedBytes(12, 4, 4, 2, 0, group: 4));
    }

    [Fact]
    public void TheDenseLayoutHoldsTwoBitCodesAndTheValueScalesOnly()
    {
        // LLaMA-7B shape, 1,000,000 tokens (padded to 1,000,192): 68 bytes per token and KV head at 2 bits, 86 with
        // the 1% slots; 32 layers of dense nuq2 = 64.9 GiB (+ 12.3 GiB of f16 weights fits an 80 GB H100).
        var shape = new DecodeShape(32, 1);
        long padded = DecodeShape.Padded(1_000_000);
        Assert.Equal(1_000_192, padded);
        long sink = 2L * 32 * 128 * 2;
        Assert.Equal(32 * padded * 68 + sink, NuqLayerCache.BytesFor(shape, 2, 1_000_000, 1, NuqLayout.Dense));
        Assert.Equal(32 * padded * 86 + sink, NuqLayerCache.BytesFor(shape, 2, 1_000_000, 1, NuqLayout.Slots));
        // Sparse keys: one 48-word record per chunk and KV head (0.75 B per token and KV head, 0.72 GiB for 32 layers).
        Assert.Equal(32 * padded * 68 + 32 * (padded / 256) * 192 + sink, NuqLayerCache.BytesFor(shape, 2, 1_000_000, 1, NuqLayout.SparseKeys));
        double gib = 32.0 * NuqLayerCache.BytesFor(shape, 2, 1_000_000, 1, NuqLayout.Dense) / (1L << 30);
        Assert.InRange(gib, 64.8, 64.9);
        Assert.Equal(2L * 32 * padded * 128 * 2, F16LayerCache.BytesFor(shape, 1_000_000));
    }
}
