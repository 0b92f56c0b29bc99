using Kvq.Cuda;
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
        foreach (var macro in new[] { "NUQ_ENTRY(B, B, 1, 1, 1)", "NUQ_ENTRY(B, B, 1, 2, 4)", "NUQ_V3(B, 1, 4)", "NUQ_V4(B, 1, 2)", "NUQ_V5(B, 1, 3)", "NUQ_V6(B, 1, 3)" })
            Assert.Contains(macro, attn);
        Assert.Contains("attn_reduce", attn);
        foreach (var name in new[] { "kv_materialize", "kv_write_f16", "ENC(2)", "ENC(3)", "ENC(4)" }) Assert.Contains(name, enc);
        Assert.Equal(6, DecodeKernels.LatestVersion);
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
    }
}
