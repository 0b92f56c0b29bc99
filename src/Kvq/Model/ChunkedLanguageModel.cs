using Kvq.Cache;

namespace Kvq.Model;

/// <summary>
/// The chunk loop every model shares: tokens go through in chunks of at most <see cref="MaxBatch"/> (a prefill chunk
/// uses matrix-matrix products; decode is a chunk of one), then the logits of every token or only of the last. The
/// CPU <see cref="Transformer"/> and the GPU model supply one chunk's pass and the output projection.
/// </summary>
public abstract class ChunkedLanguageModel : ILanguageModel
{
    public abstract ModelConfig Config { get; }
    public abstract KvShape KvShape { get; }
    public abstract string Device { get; }
    public abstract int Threads { get; }
    /// <summary>Tokens per chunk.</summary>
    public abstract int MaxBatch { get; }
    public abstract IKvSequence CreateSequence(KvCacheConfig config, int maxTokens);

    public void Forward(ReadOnlySpan<int> tokens, IKvSequence kv, Span<float> lastLogits, Span<float> allLogits = default)
    {
        Prepare(kv);
        int vocab = Config.VocabSize;
        for (int done = 0; done < tokens.Length;)
        {
            int n = Math.Min(MaxBatch, tokens.Length - done);
            bool lastChunk = done + n == tokens.Length;
            ForwardChunk(tokens.Slice(done, n), kv);
            if (!allLogits.IsEmpty)
                Logits(0, n, allLogits.Slice(done * vocab, n * vocab));
            else if (lastChunk)
                Logits(n - 1, 1, lastLogits);
            done += n;
        }
        if (!allLogits.IsEmpty && !lastLogits.IsEmpty)
            allLogits.Slice((tokens.Length - 1) * vocab, vocab).CopyTo(lastLogits);
    }

    /// <summary>Before the first chunk: a model may check that <paramref name="kv"/> is of its kind.</summary>
    protected virtual void Prepare(IKvSequence kv) { }

    /// <summary>Runs one chunk at positions kv.Length.. and appends it to the cache.</summary>
    protected abstract void ForwardChunk(ReadOnlySpan<int> tokens, IKvSequence kv);

    /// <summary>Final norm and output projection for the last chunk's rows [first, first+count).</summary>
    protected abstract void Logits(int first, int count, Span<float> logits);
}
