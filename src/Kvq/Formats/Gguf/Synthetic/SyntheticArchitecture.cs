namespace Kvq.Formats.Gguf.Synthetic;

/// <summary>
/// What a synthetic GGUF of one architecture contains beyond what every decoder has: the architecture's own metadata
/// keys and its tensor list. Adding an architecture is one of these (see <see cref="SyntheticArchitectures"/>); the
/// shared keys (sizes, heads, norm epsilon, RoPE base and dims, context) are written by <see cref="SyntheticModelWriter"/>.
/// </summary>
public sealed class SyntheticArchitecture
{
    /// <summary>general.architecture, also the prefix of the architecture's keys ("qwen3.block_count").</summary>
    public required string Name { get; init; }

    /// <summary>Keys of this architecture beyond the shared ones (sliding window, expert counts, soft-capping, ...).</summary>
    public Func<SyntheticModelSpec, IEnumerable<SyntheticMetadata>> Metadata { get; init; } = _ => [];

    /// <summary>Tensors outside the blocks: embeddings, output norm and matrix, rope_freqs, ...</summary>
    public required Func<SyntheticModelSpec, IEnumerable<SyntheticTensor>> GlobalTensors { get; init; }

    /// <summary>Tensors of block <c>layer</c>, named "blk.{layer}.*".</summary>
    public required Func<SyntheticModelSpec, int, IEnumerable<SyntheticTensor>> LayerTensors { get; init; }

    /// <summary>False where llama.cpp has no such architecture (its models are checked against references in Kvq).</summary>
    public bool LlamaCppRuns { get; init; } = true;

    public override string ToString() => Name;
}
