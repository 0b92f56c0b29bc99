using Kvq.Tensors;

namespace Kvq.Cache;

/// <summary>
/// The model's only view of one sequence's KV cache. Per layer, the model appends the new tokens' keys (BEFORE RoPE)
/// and values, then asks for attention of the same tokens' queries (AFTER RoPE) over everything stored so far, causally.
/// Whether keys are stored post-RoPE (RoPE applied on append) or pre-RoPE (RoPE fused into attention) is the cache's
/// business; the model never knows.
/// </summary>
public interface IKvSequence
{
    /// <summary>Tokens fully processed (all layers appended): the position of the next token.</summary>
    int Length { get; }

    /// <summary>Called once per chunk before any layer appends: the token ids about to be stored at positions
    /// Length.. (used for block placement and prefix hashing).</summary>
    void BeginChunk(ReadOnlySpan<int> tokens);

    /// <summary>Appends <paramref name="n"/> tokens to one layer. k and v are (n, kvHeads*headDim) row-major; keys pre-RoPE.
    /// Their positions are Length, Length+1, ... .</summary>
    void Append(int layer, ReadOnlySpan<float> k, ReadOnlySpan<float> v, int n);

    /// <summary>Causal attention for the last <paramref name="n"/> tokens appended to this layer: q is (n, heads*headDim)
    /// post-RoPE; token i sees every stored token up to and including itself. Output (n, heads*headDim).</summary>
    void Attend(int layer, ReadOnlySpan<float> q, int n, Span<float> output, Parallelism par);

    /// <summary>Marks <paramref name="n"/> appended tokens as done in every layer (Length += n).</summary>
    void Commit(int n);
}
