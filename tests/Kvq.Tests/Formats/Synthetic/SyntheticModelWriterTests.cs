using Kvq.Formats.Gguf;
using Kvq.Formats.Gguf.Synthetic;
using Kvq.LlamaCpp;
using Kvq.Tensors;
using Xunit.Abstractions;

namespace Kvq.Tests.Formats.Synthetic;

/// <summary>Every synthetic model loads in llama.cpp (LLamaSharp 0.30) with the tensor count and vocabulary written,
/// its next-token distribution is peaked, and the writer is deterministic.</summary>
public class SyntheticModelWriterTests(ITestOutputHelper output)
{
    public static TheoryData<string, GgmlType> Models()
    {
        var d = new TheoryData<string, GgmlType>();
        foreach (var n in SyntheticModels.LlamaCppNames)
        {
            d.Add(n, GgmlType.F32);
            d.Add(n, GgmlType.Q8_0);
        }
        return d;
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void LlamaCppLoadsAndRunsIt(string name, GgmlType type)
    {
        var path = SyntheticFixtures.Get(name, type);
        var spec = SyntheticFixtures.Spec(name, type);
        using var gguf = GgufFile.Open(path);
        Assert.Equal(spec.Arch, gguf.GetString("general.architecture"));
        if (type != GgmlType.F32) Assert.Equal(type, gguf.Tensor("blk.0.attn_output.weight").Type);   // every family has it (phi3 fuses q)
        Assert.Equal(GgmlType.F32, gguf.Tensor("blk.0.attn_norm.weight").Type);

        using var peer = new LlamaCppModel(path);
        Assert.Equal(spec.Vocabulary.Count, peer.VocabSize);
        using var session = peer.CreateSession(64);
        var rng = new Random(5);
        var tokens = new int[32];
        tokens[0] = 1;
        for (int i = 1; i < tokens.Length; i++) tokens[i] = rng.Next(3, peer.VocabSize);
        var logits = session.Eval(tokens, allLogits: true);
        // Peaked: over the positions, the top token takes a good share of the probability mass on average.
        double meanTop = 0;
        for (int p = 0; p < tokens.Length; p++)
        {
            var row = logits.AsSpan(p * peer.VocabSize, peer.VocabSize);
            float max = float.NegativeInfinity;
            foreach (var x in row) { Assert.True(float.IsFinite(x)); max = Math.Max(max, x); }
            double sum = 0;
            foreach (var x in row) sum += Math.Exp(x - max);
            meanTop += 1 / sum;
        }
        meanTop /= tokens.Length;
        output.WriteLine($"{name} {type}: {gguf.Tensors.Count} tensors, mean top-1 probability {meanTop:F3} over {tokens.Length} positions");
        Assert.True(meanTop > 0.2, $"mean top-1 probability {meanTop:F3}: logits are not peaked (uniform would be {1.0 / peer.VocabSize:F4})");
    }

    [Fact]
    public void SameSpecGivesSameBytes()
    {
        var spec = SyntheticFixtures.Spec("qwen3", GgmlType.Q4_0);
        using var a = new MemoryStream();
        using var b = new MemoryStream();
        SyntheticModelWriter.Build(spec).WriteTo(a);
        SyntheticModelWriter.Build(spec).WriteTo(b);
        Assert.Equal(a.ToArray(), b.ToArray());
        using var c = new MemoryStream();
        SyntheticModelWriter.Build(spec with { Seed = spec.Seed + 1 }).WriteTo(c);
        Assert.NotEqual(a.ToArray(), c.ToArray());
    }

    [Fact]
    public void DuplicateTensorIsRefused()
    {
        var spec = SyntheticFixtures.Spec("llama") with { ExtraTensors = [SyntheticTensor.Norm("output_norm.weight", 128)] };
        var e = Assert.Throws<ArgumentException>(() => SyntheticModelWriter.Build(spec));
        Assert.Contains("output_norm.weight", e.Message);
    }
}
