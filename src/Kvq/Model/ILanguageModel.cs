using Kvq.Cache;

namespace Kvq.Model;

/// <summary>
/// A model that runs tokens against a KV sequence of its own kind: the CPU <see cref="Transformer"/> over a
/// <see cref="PagedKvCache"/>, or a GPU model over a cache in device memory. Generation, evaluation and benchmarks
/// take this, so they run unchanged on either device.
/// </summary>
public interface ILanguageModel
{
    ModelConfig Config { get; }
    KvShape KvShape { get; }

    /// <summary>Where it runs, for reports: "cpu, 2 threads" or "cuda: NVIDIA H100 80GB HBM3".</summary>
    string Device { get; }

    /// <summary>Worker threads on the host (reports; 1 for a GPU model).</summary>
    int Threads { get; }

    /// <summary>Runs <paramref name="tokens"/> at positions kv.Length, kv.Length+1, ... and appends them to
    /// <paramref name="kv"/> (which must come from <see cref="CreateSequence"/>). Writes the last token's logits to
    /// <paramref name="lastLogits"/> (vocab) and, when <paramref name="allLogits"/> is given, every token's
    /// ((tokens, vocab) row-major).</summary>
    void Forward(ReadOnlySpan<int> tokens, IKvSequence kv, Span<float> lastLogits, Span<float> allLogits = default);

    /// <summary>A new, empty sequence in a cache this model can attend over, with room for at least
    /// <paramref name="maxTokens"/> tokens (a paged host cache grows as needed; a device cache is sized up front).
    /// Dispose it when done.</summary>
    IKvSequence CreateSequence(KvCacheConfig config, int maxTokens);

    /// <summary>Whether <see cref="Forward"/> takes sequences of a host <see cref="PagedKvCache"/> (the serving engine's
    /// KV pool) besides its own; false for a model that attends only over its device caches.</summary>
    bool AttendsOverHostCaches => true;
}
