using Kvq.Cuda.Attention;
using Kvq.KernelLab;

namespace Kvq.Cuda.Tests;

public class KernelSourceTests
{
    private static readonly NuqLayout[] Layouts = [NuqLayout.Slots, NuqLayout.Dense, NuqLayout.SparseKeys];

    /// <summary>Every decode kernel production asks for (DecodeKernels.AttentionName for each cache it builds: f16 and
    /// nuq2-4 in the three layouts, 1 or 4 query heads per KV head) and the reduce.</summary>
    private static HashSet<string> ProductionNames()
    {
        var names = new HashSet<string> { "attn_reduce" };
        foreach (int g in DecodeKernels.Groups)
        {
            names.Add(DecodeKernels.AttentionName(16, 16, g));
            foreach (int b in DecodeKernels.NuqBits)
                foreach (var layout in Layouts)
                    names.Add(DecodeKernels.AttentionName(b, b, g, layout));
        }
        return names;
    }

    [Fact]
    public void DecodeAttentionDefinesExactlyTheKernelsProductionLaunches()
    {
        var defined = KernelEntries.Of(KernelSources.Read("decode_attention.cu"));
        var wanted = ProductionNames();
        Assert.Equal(2 + 2 * 3 * 3 + 1, wanted.Count);
        Assert.Empty(wanted.Except(defined));   // a kernel the host asks for and the file lacks
        Assert.Empty(defined.Except(wanted));   // a kernel compiled at every start that production never runs
        Assert.Contains("attn_nuq_k3_v3_g4_r9_sparse", defined);
        Assert.Contains("attn_f16_g1", defined);
        // What production does not compile is refused by name, not left to a failed cuModuleGetFunction.
        Assert.Throws<NotSupportedException>(() => DecodeKernels.AttentionName(4, 4, 2));
        Assert.Throws<NotSupportedException>(() => DecodeKernels.AttentionName(5, 5, 1));
        Assert.Throws<NotSupportedException>(() => DecodeKernels.AttentionName(4, 2, 1));
    }

    [Fact]
    public void TheLabFileDefinesEveryOtherVersionAndNothingProductionHas()
    {
        var lab = KernelEntries.Of(DecodeKernelVersions.Source());
        var production = KernelEntries.Of(KernelSources.Read("decode_attention.cu"));
        var wantLab = new HashSet<string>();
        int inProduction = 0;
        foreach (int version in Enumerable.Range(DecodeKernelVersions.FirstVersion, DecodeKernelVersions.LastVersion))
            foreach (int g in DecodeKernels.Groups)
                foreach (int b in DecodeKernels.NuqBits.Append(16))
                    foreach (var layout in Layouts)
                    {
                        if (!DecodeKernelVersions.Compiled(b, b, g, version, layout)) continue;
                        var name = DecodeKernelVersions.AttentionName(b, b, g, version, layout);
                        if (DecodeKernelVersions.InProduction(b, g, version)) { Assert.Contains(name, production); inProduction++; }
                        else wantLab.Add(name);
                    }
        Assert.True(inProduction > 0);
        Assert.Empty(wantLab.Except(lab));
        Assert.Empty(lab.Except(wantLab));
        Assert.Empty(lab.Intersect(production));   // the lab loads beside production: no name in both
        // Every case the GPU test runs (both shapes) names a kernel that one of the two files defines.
        foreach (int g in new[] { 1, 4 })
            foreach (var (bits, version, layout) in DecodeAttentionGpuTests.Cases)
            {
                var name = DecodeKernelVersions.AttentionName(bits, bits, g, version, layout);
                Assert.True(lab.Contains(name) || production.Contains(name), $"{name} (v{version}, {bits} bits, G = {g}, {layout})");
            }
        // The kernel list (run first by the lab's Program) also resolves to existing kernels.
        foreach (var (bits, g, version, layout) in DecodeKernelVersions.Listed)
        {
            var name = DecodeKernelVersions.AttentionName(bits, bits, g, version, layout);
            Assert.True(lab.Contains(name) || production.Contains(name), name);
        }
    }

    [Fact]
    public void KvEncodeDefinesEveryKernelTheAppendPathLaunches()
    {
        var enc = KernelEntries.Of(KernelSources.Read("kv_encode.cu"));
        var wanted = new List<string> { "encode_key_list_s2", "append_key_list_s2", "kv_materialize", "kv_write_f16" };
        foreach (int b in DecodeKernels.NuqBits)
            foreach (var suffix in new[] { "", "_dense" })
                wanted.AddRange([$"encode_keys_b{b}{suffix}", $"encode_values_b{b}{suffix}", $"append_keys_b{b}{suffix}", $"append_values_b{b}{suffix}",
                    $"append_rows_keys_b{b}{suffix}", $"append_rows_values_b{b}{suffix}"]);
        Assert.Empty(wanted.Except(enc));
        Assert.Equal(48, DecodeShape.KeyListWords);
        Assert.Equal(9, DecodeKernels.NuqVersion);
    }

    [Fact]
    public void ModelDefinesTheDecodeOncePrefillKernels()
    {
        // CudaKvSequence's NuqPrefill paths: ModelKernels.NuqToF16 / ContiguousToF16 (head dim 64 and 128; the contiguous
        // layout is 128 only) and the f16 prefill kernels they hand the scratch to (AttentionTileF16, both modes).
        var model = KernelEntries.Of(KernelSources.Read("model.cu"));
        Assert.Empty(new[] { "nuq_to_f16_nuq_d64", "nuq_to_f16_nuq_d128", "nuq_to_f16_contig_d128", "attn_mma_f16_d64", "attn_mma_f16_d128",
            "attn_tile_f16_d64", "attn_tile_f16_d128", "kv_append_f16" }.Except(model));
    }

    [Fact]
    public void TheHeadersNvrtcGetsAreTheIncludedOnesEachOnce()
    {
        var attn = KernelSources.Includes(KernelSources.Read("decode_attention.cu")).Select(h => h.Name).ToList();
        Assert.Equal(["attn_split.cuh", "decode_common.cuh", "common.cuh", "attn_v7.cuh", "decode_stage.cuh"], attn);
        Assert.Equal(["common.cuh"], KernelSources.Includes(KernelSources.Read("model.cu")).Select(h => h.Name));
        Assert.Equal(["common.cuh"], KernelSources.Includes(KernelSources.Read("kv_encode.cu")).Select(h => h.Name));
        Assert.Empty(KernelSources.Includes(KernelSources.Read("shard_combine.cu")));
        Assert.Equal(attn, KernelSources.Includes(DecodeKernelVersions.Source()).Select(h => h.Name));
        // u32 and the f16 conversions are defined once, in common.cuh, for every kernel file.
        foreach (var file in new[] { "decode_attention.cu", "kv_encode.cu", "model.cu", "attn_v7.cuh", "decode_common.cuh" })
            Assert.DoesNotContain("typedef unsigned int u32;", KernelSources.Read(file));
        var e = Assert.Throws<FileNotFoundException>(() => KernelSources.Includes("#include \"gone.cuh\"\n"));
        Assert.Contains("gone.cuh", e.Message);
        Assert.Contains("common.cuh", e.Message);   // the message lists what is embedded
    }

    [Fact]
    public void TheEntryReaderExpandsPastesAndSkipsComments()
    {
        const string src = "#define E(N, S) \\\nextern \"C\" __global__ void __launch_bounds__(T, 2) k_##N##S(int a) { f(a, (b)); }\n" +
            "#define TWO(N) E(N, ) E(N, _x)\nTWO(1) TWO(2)\n// TWO(3)\n/* TWO(4) */\nextern \"C\" __global__ void plain(int a) {}\n";
        Assert.Equal(["k_1", "k_1_x", "k_2", "k_2_x", "plain"], KernelEntries.Of(src).Order(StringComparer.Ordinal));
        Assert.Throws<InvalidOperationException>(() => KernelEntries.Of("#define E(A, B) A B\nE(1)\n"));
    }

    [Fact]
    public void LabNamesMapVersionsElevenToFourteenToVersionNineForMha()
    {
        Assert.Equal("attn_nuq_k4_v4_g1_r9", DecodeKernelVersions.AttentionName(4, 4, 1, 11));
        Assert.Equal("attn_nuq_k2_v2_g1_r9_dense", DecodeKernelVersions.AttentionName(2, 2, 1, 12, NuqLayout.Dense));
        Assert.Equal("attn_nuq_k3_v3_g4_r12_sparse", DecodeKernelVersions.AttentionName(3, 3, 4, 12, NuqLayout.SparseKeys));
        Assert.Equal("attn_nuq_k4_v4_g4_r11", DecodeKernelVersions.AttentionName(4, 4, 4, 11));
        Assert.Equal("attn_nuq_k4_v4_g1_r10", DecodeKernelVersions.AttentionName(4, 4, 1, 10));
        Assert.Equal("attn_f16_g4", DecodeKernelVersions.AttentionName(16, 16, 4, 12));
        Assert.Throws<NotSupportedException>(() => DecodeKernelVersions.AttentionName(4, 4, 4, 5, NuqLayout.Dense));
        Assert.Throws<NotSupportedException>(() => DecodeKernelVersions.AttentionName(3, 3, 1, 10));
        Assert.Equal("attn_nuq_k4_v4_g1_r9", DecodeKernelVersions.AttentionName(4, 4, 1, 13));
        Assert.Equal("attn_nuq_k2_v2_g4_r14_dense", DecodeKernelVersions.AttentionName(2, 2, 4, 14, NuqLayout.Dense));
        // v15: 4 bits, G = 4 in the lab file; MHA is v9; no 2- or 3-bit kernel.
        Assert.Equal("attn_nuq_k4_v4_g4_r15", DecodeKernelVersions.AttentionName(4, 4, 4, 15));
        Assert.Equal("attn_nuq_k4_v4_g4_r15_sparse", DecodeKernelVersions.AttentionName(4, 4, 4, 15, NuqLayout.SparseKeys));
        Assert.Equal("attn_nuq_k4_v4_g1_r9", DecodeKernelVersions.AttentionName(4, 4, 1, 15));
        Assert.Throws<NotSupportedException>(() => DecodeKernelVersions.AttentionName(3, 3, 4, 15));
        // v16: the same shapes and layouts as v15.
        Assert.Equal("attn_nuq_k4_v4_g4_r16", DecodeKernelVersions.AttentionName(4, 4, 4, 16));
        Assert.Equal("attn_nuq_k4_v4_g4_r16_dense", DecodeKernelVersions.AttentionName(4, 4, 4, 16, NuqLayout.Dense));
        Assert.Equal("attn_nuq_k4_v4_g1_r9", DecodeKernelVersions.AttentionName(4, 4, 1, 16));
        Assert.Throws<NotSupportedException>(() => DecodeKernelVersions.AttentionName(2, 2, 4, 16));
        // v17: the same shapes and layouts as v16.
        Assert.Equal("attn_nuq_k4_v4_g4_r17_sparse", DecodeKernelVersions.AttentionName(4, 4, 4, 17, NuqLayout.SparseKeys));
        Assert.Equal("attn_nuq_k4_v4_g1_r9", DecodeKernelVersions.AttentionName(4, 4, 1, 17));
        Assert.Throws<NotSupportedException>(() => DecodeKernelVersions.AttentionName(3, 3, 4, 17));
        // v18: the same shapes and layouts as v17.
        Assert.Equal("attn_nuq_k4_v4_g4_r18", DecodeKernelVersions.AttentionName(4, 4, 4, 18));
        Assert.Equal("attn_nuq_k4_v4_g4_r18_dense", DecodeKernelVersions.AttentionName(4, 4, 4, 18, NuqLayout.Dense));
        Assert.Equal("attn_nuq_k4_v4_g1_r9", DecodeKernelVersions.AttentionName(4, 4, 1, 18));
        Assert.Throws<NotSupportedException>(() => DecodeKernelVersions.AttentionName(3, 3, 4, 18));
        Assert.Throws<ArgumentOutOfRangeException>(() => DecodeKernelVersions.AttentionName(4, 4, 1, 19));
        Assert.True(DecodeKernelVersions.InProduction(4, 1, 12));
        Assert.False(DecodeKernelVersions.InProduction(4, 4, 12));
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
        // v13/v14: 16-token tiles (the values pass writes 16 f16 value rows per tensor-core step).
        Assert.Equal(DecodeAttention.SharedBytes(9, 4, 4, 2, 0) + 32768, DecodeAttention.SharedBytes(13, 4, 4, 2, 0, group: 4));
        // v15: v11's 8-token key tiles only (its value operands are made in registers).
        Assert.Equal(DecodeAttention.SharedBytes(11, 4, 4, 2, 0, group: 4), DecodeAttention.SharedBytes(15, 4, 4, 2, 0, group: 4));
        // v16: the same 16 KB hold each warp's rotated query B registers, and the key table (2 x 8 x 3 x 32 x 16 B) follows.
        Assert.Equal(DecodeAttention.SharedBytes(15, 4, 4, 2, 0, group: 4) + 24576, DecodeAttention.SharedBytes(16, 4, 4, 2, 0, group: 4));
        Assert.Equal(DecodeAttention.SharedBytes(9, 4, 4, 2, 0), DecodeAttention.SharedBytes(16, 4, 4, 2, 0, group: 1));
        // v17: v16's, with the query rows padded by 16 bytes (8 warps x 8 slices).
        Assert.Equal(DecodeAttention.SharedBytes(16, 4, 4, 2, 0, group: 4) + 1024, DecodeAttention.SharedBytes(17, 4, 4, 2, 0, group: 4));
        Assert.Equal(DecodeAttention.SharedBytes(9, 4, 4, 2, 0), DecodeAttention.SharedBytes(17, 4, 4, 2, 0, group: 1));
        // v18: v17's, with half of the key table (one 16-offset table for both halves of a warp's tokens).
        Assert.Equal(DecodeAttention.SharedBytes(17, 4, 4, 2, 0, group: 4) - 12288, DecodeAttention.SharedBytes(18, 4, 4, 2, 0, group: 4));
        Assert.Equal(DecodeAttention.SharedBytes(9, 4, 4, 2, 0), DecodeAttention.SharedBytes(18, 4, 4, 2, 0, group: 1));
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
