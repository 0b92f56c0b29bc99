using Kvq.Serving;

namespace Kvq.Server.OpenAi;

/// <summary>A request the server answers with an OpenAI-shaped error: status, message, type, param, code.</summary>
internal sealed class ApiException(int status, string message, string? param = null, string? code = null, string? type = null)
    : Exception(message)
{
    public int Status { get; } = status;
    public string? Param { get; } = param;
    public string? Code { get; } = code ?? (status == 400 ? "invalid_value" : null);
    public string Type { get; } = type ?? status switch
    {
        401 => "authentication_error",
        404 => "invalid_request_error",
        429 => "rate_limit_error",
        >= 500 => "server_error",
        _ => "invalid_request_error",
    };

    public ErrorBody Body => new(new ErrorDetail(Message, Type, Param, Code));

    /// <summary>The engine's refusals in OpenAI's terms: a full queue is 429, a stopping engine 503, the rest 400.</summary>
    public static ApiException From(EngineRequestException e) => e.Code switch
    {
        "queue_full" => new ApiException(429, e.Message, null, "queue_full"),
        "engine_stopped" => new ApiException(503, e.Message, null, "engine_stopped"),
        _ => new ApiException(400, MessageOf(e), e.ParamName, e.Code),
    };

    // ArgumentException appends " (Parameter 'x')" to its message; the param travels in its own field.
    private static string MessageOf(ArgumentException e) =>
        e.ParamName is { } p && e.Message.EndsWith($" (Parameter '{p}')", StringComparison.Ordinal)
            ? e.Message[..^$" (Parameter '{p}')".Length] : e.Message;
}
