namespace Kvq.Cache.Codecs;

/// <summary>
/// One region of a per-token codec's block that holds a fixed-size record per token slot: slot s's bytes are
/// [<see cref="Offset"/> + s * <see cref="BytesPerToken"/>, + BytesPerToken). A codec whose block is made only of such
/// regions can move a token between slots or blocks by copying bytes (<see cref="KvCodec.CopySlot"/>), exactly.
/// </summary>
/// <param name="Offset">Start of the region in the block, in bytes.</param>
/// <param name="BytesPerToken">Bytes of one slot's record in this region.</param>
public readonly record struct TokenSection(int Offset, int BytesPerToken);
