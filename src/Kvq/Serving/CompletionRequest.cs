using Kvq.Sampling;

namespace Kvq.Serving;

/// <summary>One request to an <see cref="InferenceEngine"/>: prompt tokens in, sampled tokens out.</summary>
public sealed record CompletionRequest
{
    /// <summary>The prompt, already tokenized (BOS included where the model wants one).</summary>
    public required IReadOnlyList<int> PromptTokens { get; init; }
    public int MaxTokens { get; init; } = 256;
    public SamplerOptions Sampler { get; init; } = new();
    public IReadOnlyList<string> StopStrings { get; init; } = [];
    /// <summary>Higher runs first; equal priorities run in arrival order (FCFS). Under memory pressure the lowest
    /// priority, latest arrival is preempted first.</summary>
    public int Priority { get; init; }
    /// <summary>Keep going past end-of-generation tokens until <see cref="MaxTokens"/> (load generators, benchmarks).</summary>
    public bool IgnoreEndOfGeneration { get; init; }
    /// <summary>Report each token's log-probability (under the model's distribution before sampling settings).</summary>
    public bool Logprobs { get; init; }
    /// <summary>With <see cref="Logprobs"/>: the most likely alternatives reported per token (0..20).</summary>
    public int TopLogprobs { get; init; }
}
