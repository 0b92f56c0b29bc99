namespace Kvq.Sampling;

/// <summary>Sampling settings; Temperature 0 means greedy (argmax).</summary>
public sealed record SamplerOptions
{
    public float Temperature { get; init; } = 0.8f;
    public int TopK { get; init; } = 40;               // 0 = off
    public float TopP { get; init; } = 0.95f;          // 1 = off
    public float MinP { get; init; } = 0.05f;          // 0 = off
    public float RepetitionPenalty { get; init; } = 1.0f; // 1 = off
    public int RepetitionWindow { get; init; } = 64;   // last N tokens penalised
    public ulong Seed { get; init; } = 42;
    /// <summary>OpenAI's presence penalty (-2..2, 0 = off): subtracted once from the logit of every token that already
    /// appears among the generated tokens.</summary>
    public float PresencePenalty { get; init; }
    /// <summary>OpenAI's frequency penalty (-2..2, 0 = off): subtracted from a token's logit once per time it appears
    /// among the generated tokens.</summary>
    public float FrequencyPenalty { get; init; }

    public static SamplerOptions Greedy => new() { Temperature = 0 };
}
