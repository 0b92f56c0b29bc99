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
