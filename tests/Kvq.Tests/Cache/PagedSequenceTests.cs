using Kvq.Cache;
using Kvq.Tensors;

namespace Kvq.Tests.Cache;

public class PagedSequenceTests
{
    /// <summary>The paged f32 cache (odd block sizes, online softmax over blocks) equals the dense reference.</summary>
    [Theory]
    [InlineData(1, 7)]
    [InlineData(5, 32)]
    [InlineData(64, 16)]
    public void PagedF32EqualsDense(int batch, int blockTokens)
    {
        var model = new Kvq.Model.Transformer(SharedModels.Books, new Parallelism(2), maxBatch: batch);
        var tokens = SharedModels.MobyDickTokens.AsSpan(1000, 150).ToArray();
        int vocab = model.Config.VocabSize;
        var expected = new float[tokens.Length * vocab];
        var actual = new float[tokens.Length * vocab];
        model.Forward(tokens, new DenseF32Sequence(model.KvShape), default, expected);
        var seq = new PagedKvCache(model.KvShape, new KvCacheConfig("f32", "f32", blockTokens)).CreateSequence();
        model.Forward(tokens, seq, default, actual);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-3f * (1 + Math.Abs(expected[i])), $"logit {i}: {expected[i]} vs {actual[i]}");
        Assert.Equal(tokens.Length, seq.Length);
    }
}

public class SinkTokenTests
{
    /// <summary>Sink rows are read from their exact f16 copies: with an f16 codec the result is unchanged, and with a
    /// coarse codec the first tokens' contribution becomes exact (the logits move toward the f32 reference).</summary>
    [Fact]
    public void SinkRowsAreReadFromTheirExactCopies()
    {
        var model = new Kvq.Model.Transformer(SharedModels.Books, new Parallelism(2), maxBatch: 16);
        var tokens = SharedModels.MobyDickTokens.AsSpan(2000, 90).ToArray();
        tokens[0] = 1;
        int vocab = model.Config.VocabSize;
        float[] Run(KvCacheConfig c)
        {
            var logits = new float[tokens.Length * vocab];
            model.Forward(tokens, new PagedKvCache(model.KvShape, c).CreateSequence(), default, logits);
            return logits;
        }
        var f16 = Run(new KvCacheConfig("f16", "f16", 32));
        var f16Sink = Run(new KvCacheConfig("f16", "f16", 32, SinkTokens: 4));
        Assert.Equal(f16, f16Sink); // sink copies are f16 too: identical arithmetic
        var reference = Run(new KvCacheConfig("f32", "f32", 32));
        var bf16 = Run(new KvCacheConfig("bf16", "bf16", 32));
        var bf16Sink = Run(new KvCacheConfig("bf16", "bf16", 32, SinkTokens: 1));
        double Err(float[] x) { double e = 0; for (int i = 0; i < x.Length; i++) e += Math.Abs(x[i] - reference[i]); return e; }
        Assert.NotEqual(bf16, bf16Sink);
        Assert.True(Err(bf16Sink) < Err(bf16), $"sink error {Err(bf16Sink)} vs {Err(bf16)}");
    }
}

public class SplitKTests
{
    /// <summary>Decode with more threads than KV heads splits each head's blocks across threads and merges the
    /// partial softmax states: the result equals the dense reference.</summary>
    [Theory]
    [InlineData("f32", 8)]
    [InlineData("f16", 5)]
    public void SplitKDecodeEqualsDense(string spec, int threads)
    {
        var model = new Kvq.Model.Transformer(SharedModels.Books, new Parallelism(threads), maxBatch: 1);
        var tokens = SharedModels.MobyDickTokens.AsSpan(9000, 300).ToArray();
        int vocab = model.Config.VocabSize;
        var expected = new float[vocab];
        var actual = new float[vocab];
        var reference = new Kvq.Model.Transformer(SharedModels.Books, new Parallelism(1), maxBatch: 64);
        reference.Forward(tokens, new DenseF32Sequence(reference.KvShape), expected);
        var seq = new PagedKvCache(model.KvShape, new KvCacheConfig(spec, spec, 16)).CreateSequence();
        model.Forward(tokens, seq, actual); // maxBatch 1: every token is a decode step
        float tol = spec == "f32" ? 1e-3f : 2e-2f;
        for (int i = 0; i < vocab; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tol * (1 + Math.Abs(expected[i])), $"logit {i}: {expected[i]} vs {actual[i]}");
    }
}

/// <summary>Split-K decode over lossy codecs: each split decodes its own range of blocks (outlier rows, sink copies and
/// the staging window included) and the partial softmax states are merged. One KV head and one query token, so with
/// 8 threads each head's blocks are cut into up to 8 ranges; the same sequence (the same stored codes) attended with
/// one thread (no split) must give the same output to float rounding, while the codec's own error (against an f32
/// cache of the same tokens) is orders of magnitude larger.</summary>
public class SplitKLossyTests(Xunit.Abstractions.ITestOutputHelper output)
{
    [Theory]
    [InlineData("q8_0", 8, 0, 300)]
    [InlineData("int4:rot", 8, 0, 301)]
    [InlineData("q4_0/int2-tok", 16, 2, 333)]
    [InlineData("nuq4-1%", 8, 1, 290)]
    [InlineData("tq3", 8, 0, 260)]
    [InlineData("kivi2", 32, 0, 700)]  // KIVI's blocks are 32 tokens and its last 128 tokens stage in f16
    [InlineData("int4-ch/kivi4", 32, 1, 611)]
    public void SplitKDecodeEqualsOneThreadOverTheSameCodes(string spec, int blockTokens, int sink, int tokens)
    {
        var shape = new KvShape(2, 1, 4, 64, new Rope(64, 64, 10000f, 1f, RopeStyle.Normal));
        var config = KvCacheConfig.Parse(spec, blockTokens) with { SinkTokens = sink };
        if (spec.StartsWith("nuq")) config = config with { Profile = Codecs.KvQuant.KvQuantTestData.Profile(shape) };
        int seed = TestSeeds.Of(nameof(SplitKDecodeEqualsOneThreadOverTheSameCodes), spec);
        var rng = new Random(seed);
        var q = new float[shape.QDim];
        for (int i = 0; i < q.Length; i++) q[i] = (float)(rng.NextDouble() - 0.5) * 4;
        float[] Attend(KvCacheConfig c, int threads)
        {
            using var seq = new PagedKvCache(shape, c).CreateSequence();
            Kvq.Eval.KvMemoryEvaluator.Fill(seq, shape, tokens, seed);
            using var par = new Parallelism(threads);
            var o = new float[shape.QDim];
            seq.Attend(1, q, 1, o, par);
            return o;
        }
        var one = Attend(config, 1);
        var split = Attend(config, 8);
        var exact = Attend(new KvCacheConfig("f32", "f32", blockTokens), 1);
        double splitErr = 0, codecErr = 0, scale = 0;
        for (int i = 0; i < one.Length; i++)
        {
            splitErr = Math.Max(splitErr, Math.Abs(one[i] - split[i]));
            codecErr = Math.Max(codecErr, Math.Abs(one[i] - exact[i]));
            scale = Math.Max(scale, Math.Abs(exact[i]));
        }
        output.WriteLine($"{spec}, {tokens} tokens in {blockTokens}-token blocks, sink {sink}, seed {seed}: max |split-K - one thread| {splitErr:E2}, " +
                         $"max |codec - f32| {codecErr:E2}, max |out| {scale:F3}");
        Assert.True(splitErr <= 1e-5 * Math.Max(1, scale), $"{spec}: split-K differs from one thread by {splitErr:E2}");
        Assert.True(codecErr > 100 * splitErr && codecErr > 1e-4, $"{spec}: the codec error {codecErr:E2} does not stand out");
    }
}
