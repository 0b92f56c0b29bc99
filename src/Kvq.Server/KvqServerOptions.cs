using Kvq.Serving;

namespace Kvq.Server;

/// <summary>How a <see cref="KvqServer"/> listens and what it lets clients do. The defaults are the safe ones: loopback
/// only, no CORS, bounded bodies, tokens, messages, concurrent requests and request time.</summary>
public sealed record KvqServerOptions
{
    /// <summary>The name clients pass as "model" (and /v1/models lists).</summary>
    public required string ModelId { get; init; }

    /// <summary>An IP address, or "localhost" (127.0.0.1). A non-loopback address needs <see cref="ApiKey"/>.</summary>
    public string Host { get; init; } = "127.0.0.1";

    /// <summary>0 picks a free port (see <see cref="KvqServer.BaseAddress"/>).</summary>
    public int Port { get; init; } = 8080;

    /// <summary>When set, every endpoint but /health needs "Authorization: Bearer KEY".</summary>
    public string? ApiKey { get; init; }

    /// <summary>Turns a chat's messages into a prompt (the model's chat template); null: chat endpoints answer with an
    /// error that says the model has no chat template, completions still work.</summary>
    public IChatPrompt? ChatPrompt { get; init; }

    public long MaxRequestBodyBytes { get; init; } = 4 << 20;

    /// <summary>The most max_tokens a request may ask for, and what it gets when it asks for none.</summary>
    public int MaxTokensLimit { get; init; } = 4096;

    public int MaxMessages { get; init; } = 1024;

    /// <summary>Generation requests (streaming or not) in flight at most; more are answered 429 at once.</summary>
    public int MaxConcurrentRequests { get; init; } = 256;

    /// <summary>A generation request's whole time, streaming included; past it the request is cancelled (504 if
    /// nothing was sent yet, else the stream ends with an error event).</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>How long a stop (SIGTERM, Ctrl-C) waits for in-flight requests before it cuts them off.</summary>
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Origins allowed by CORS; empty (the default): no CORS headers at all.</summary>
    public IReadOnlyList<string> CorsOrigins { get; init; } = [];

    /// <summary>Log requests and the host's own lines at Information (else warnings and errors only).</summary>
    public bool Verbose { get; init; }
}
