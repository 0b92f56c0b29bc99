using Kvq.Formats;
using Kvq.Formats.Gguf.Synthetic;
using Kvq.Model.Loading;
using Kvq.Tensors;

namespace Kvq.Tests.Model;

/// <summary>Malformed fused and expert files are refused with a typed error naming the key or tensor.</summary>
public class FamilyModelBadInputTests
{
    [Fact]
    public void Qwen2MoeWithoutExpertCountIsRefused()
    {
        var arch = new SyntheticArchitecture
        {
            Name = "qwen2moe",
            GlobalTensors = SyntheticFamilyArchitectures.Qwen2Moe.GlobalTensors,
            LayerTensors = SyntheticFamilyArchitectures.Qwen2Moe.LayerTensors,   // tensors present, expert keys missing
        };
        var spec = SyntheticFixtures.Spec("qwen2moe") with { Name = "qwen2moe-no-count", Architecture = arch };
        var e = Assert.Throws<ModelFormatException>(() => GgufModelLoader.Load(SyntheticFixtures.Write(spec)));
        Assert.Contains("qwen2moe.expert_count", e.Message);
    }

    [Fact]
    public void UnknownRopeScalingTypeIsRefusedByName()
    {
        // NTK-aware scaling has no GGUF key (converters bake it into rope.freq_base); a type Kvq does not know is refused.
        var spec = SyntheticFixtures.Spec("llama-linear") with
        {
            Name = "llama-ntk",
            ExtraMetadata = [SyntheticMetadata.Str("llama.rope.scaling.type", "ntk"), SyntheticMetadata.F32("llama.rope.scaling.factor", 4f)],
        };
        var e = Assert.Throws<ModelFormatException>(() => GgufModelLoader.Load(SyntheticFixtures.Write(spec)));
        Assert.Contains("llama.rope.scaling.type", e.Message);
        Assert.Contains("rope scaling 'ntk' is not supported", e.Message);
        using var linear = GgufModelLoader.Load(SyntheticFixtures.Get("llama-linear"));
        Assert.Equal(4f, linear.Config.RopeScale);   // positions divided by 4
    }

    [Fact]
    public void ExpertCountDisagreeingWithTheTensorsIsRefused()
    {
        var mixtral = SyntheticFamilyArchitectures.Mixtral;
        var arch = new SyntheticArchitecture
        {
            Name = "llama",
            // Says 3 experts; the tensors stack 4.
            Metadata = s => [SyntheticMetadata.U32(s.Key("expert_count"), 3), SyntheticMetadata.U32(s.Key("expert_used_count"), 2)],
            GlobalTensors = mixtral.GlobalTensors,
            LayerTensors = mixtral.LayerTensors,
        };
        var spec = SyntheticFixtures.Spec("mixtral") with { Name = "mixtral-bad-count", Architecture = arch };
        var e = Assert.Throws<ModelFormatException>(() => GgufModelLoader.Load(SyntheticFixtures.Write(spec)));
        Assert.Contains("blk.0.ffn_gate_inp.weight", e.Message);
    }

    [Fact]
    public void Phi3FusedTensorsOfTheWrongWidthAreRefused()
    {
        var arch = new SyntheticArchitecture
        {
            Name = "phi3",
            GlobalTensors = SyntheticFamilyArchitectures.Phi3.GlobalTensors,
            // ffn_up holding only the up rows (no gate half): llama.cpp refuses it too.
            LayerTensors = (s, l) => SyntheticFamilyArchitectures.Phi3.LayerTensors(s, l)
                .Select(t => t.Name.EndsWith("ffn_up.weight", StringComparison.Ordinal) ? SyntheticTensor.Matrix(t.Name, s.Dim, s.FfnDim) : t),
        };
        var spec = SyntheticFixtures.Spec("phi3") with { Name = "phi3-half-up", Architecture = arch };
        var e = Assert.Throws<ModelFormatException>(() => GgufModelLoader.Load(SyntheticFixtures.Write(spec)));
        Assert.Contains("blk.0.ffn_up.weight", e.Message);
    }

    [Fact]
    public unsafe void LoadedPhi3ViewsShareTheFileBytes()
    {
        using var w = GgufModelLoader.Load(SyntheticFixtures.Get("phi3"));
        var l = w.Layers[0];
        Assert.True(l.Wk.Data - l.Wq.Data == l.Wq.RowBytes * w.Config.QDim);
        Assert.True(l.Wv.Data - l.Wk.Data == l.Wk.RowBytes * w.Config.KvDim);
        Assert.True(l.WUp!.Data - l.WGate!.Data == l.WGate.RowBytes * w.Config.FfnDim);
        Assert.Null(l.Experts);
        Assert.Equal(RopeStyle.Neox, w.Config.RopeStyle);
    }
}
