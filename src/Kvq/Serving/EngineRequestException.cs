namespace Kvq.Serving;

/// <summary>A request the engine refuses at once (never queued): what is wrong, in the caller's terms, with a
/// machine-readable <see cref="Code"/> (OpenAI's codes where one fits) and the offending field.</summary>
public sealed class EngineRequestException(string message, string code, string? param = null) : ArgumentException(message, param)
{
    private readonly string _message = message;

    /// <summary>"context_length_exceeded", "invalid_value", "kv_budget_exceeded", "kv_budget_too_large" (<see cref="KvPool"/>),
    /// "queue_full", "engine_stopped".</summary>
    public string Code { get; } = code;

    /// <summary>The message alone: ArgumentException would append " (Parameter 'x')", which kvq printed as is on its
    /// one-line errors (kvq serve --kv-budget 1KiB, a failed kvq bench serve row); the field is in ParamName.</summary>
    public override string Message => _message;
}
