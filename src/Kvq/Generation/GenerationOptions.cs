using Kvq.Sampling;

namespace Kvq.Generation;

public sealed record GenerationOptions
{
    public int MaxTokens { get; init; } = 256;
    public SamplerOptions Sampler { get; init; } = new();
    public IReadOnlyList<string> StopStrings { get; init; } = [];
    /// <summary>Null: follow the model's metadata.</summary>
    public bool? AddBos { get; init; }
}
