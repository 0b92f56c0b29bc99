namespace Kvq.Cache.Paging;

/// <summary>
/// A copy-on-write order for the storage layer: copy the first <see cref="TokenCount"/> token slots (in tokens, not
/// bytes) of block <see cref="SourceBlockId"/> into block <see cref="DestinationBlockId"/>, for every layer and KV
/// head, before writing the tokens of the append that produced it. The bookkeeping only reports it.
/// </summary>
public readonly record struct BlockCopy(int SourceBlockId, int DestinationBlockId, int TokenCount);
