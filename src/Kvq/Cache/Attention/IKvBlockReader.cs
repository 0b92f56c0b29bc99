using Kvq.Cache.Storage;

namespace Kvq.Cache.Attention;

/// <summary>
/// What attention reads of a sequence, one layer at a time: how many tokens (slots) it holds, which blocks hold them,
/// their keys and values (encoded blocks, staged tokens, sink rows: <see cref="KvSideStore"/>), their RoPE positions
/// and, under a merging policy, the log-weights of merged slots. Called per block, never per element.
/// </summary>
internal interface IKvBlockReader
{
    KvShape Shape { get; }
    int BlockTokens { get; }
    KvSideStore Keys { get; }
    KvSideStore Values { get; }

    /// <summary>Tokens the layer holds.</summary>
    int Count(int layer);

    /// <summary>Block ids of the layer, in token order.</summary>
    ReadOnlySpan<int> Blocks(int layer);

    /// <summary>RoPE positions of slots [slot0, slot0 + count) of one layer and KV head.</summary>
    ReadOnlySpan<int> Positions(int layer, int head, int slot0, int count);

    /// <summary>With offloading: which blocks each KV head's queries read (null: all of them).</summary>
    Offload.BlockSelector? Offload { get; }

    /// <summary>ln(tokens a slot stands for) of slots [slot0, slot0 + count); empty when slots are never merged.</summary>
    ReadOnlySpan<float> LogWeights(int layer, int head, int slot0, int count);
}
