namespace Kvq.Cache.Policies;

/// <summary>
/// What a policy sees of one sequence's cache, per layer and KV head: the slots held (in position order), the
/// position of the token in each slot, the attention each slot received (when the policy asked for it), and the
/// decoded keys and values. Spans are valid until the next call.
/// </summary>
public interface IPolicyView
{
    int Layers { get; }
    int KvHeads { get; }
    int HeadDim { get; }
    /// <summary>Tokens seen by the sequence (committed), in tokens.</summary>
    int Length { get; }
    /// <summary>Tokens of the chunk just committed (the last <c>ChunkTokens</c> slots of every layer hold them).</summary>
    int ChunkTokens { get; }
    /// <summary>Slots layer <paramref name="layer"/> holds (every head of a layer holds as many).</summary>
    int Count(int layer);
    /// <summary>Slots each head of layer <paramref name="layer"/> keeps in the selection under way.</summary>
    int Keep(int layer);
    /// <summary>Leading slots that must stay (attention sinks) for this layer and head (-1 = every head).</summary>
    int Sinks(int layer, int head);
    /// <summary>Token position of each slot, increasing; head -1 = head 0 (heads share positions in layer scope).</summary>
    ReadOnlySpan<int> Positions(int layer, int head);
    /// <summary>Attention probability each slot received, summed over the KV head's query heads and the observed
    /// queries (<see cref="KvPolicy.ObservedQueries"/>), over the last chunk or accumulated (<see cref="KvPolicy.AccumulatesAttention"/>).</summary>
    ReadOnlySpan<float> Attention(int layer, int head);
    /// <summary>ln(tokens a slot stands for): 0 unless merged.</summary>
    ReadOnlySpan<float> LogWeights(int layer, int head);
    /// <summary>Keys of every slot, (Count, HeadDim), as stored: post-RoPE, or pre-RoPE when <see cref="KeysPreRope"/>.</summary>
    ReadOnlySpan<float> Keys(int layer, int head);
    /// <summary>Values of every slot, (Count, HeadDim).</summary>
    ReadOnlySpan<float> Values(int layer, int head);
    bool KeysPreRope { get; }
    /// <summary>A float buffer of Count(layer) for a policy's own use (scores); a second one for partial results.</summary>
    Span<float> Scratch(int layer);
    Span<float> Scratch2(int layer);
    /// <summary>Working buffer number <paramref name="id"/> (0..3) of at least <paramref name="length"/> floats, reused
    /// across selections of this sequence (no allocation per decode step); not cleared.</summary>
    Span<float> Work(int id, int length);
}

/// <summary>A view that may also rewrite slots (merging): new key and value (stored form), log-weight and attention.</summary>
public interface IPolicyEditor : IPolicyView
{
    void Rewrite(int layer, int head, int slot, ReadOnlySpan<float> key, ReadOnlySpan<float> value, float logWeight, float attention);
}
