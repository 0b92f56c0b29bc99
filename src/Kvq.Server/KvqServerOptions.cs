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

    /// <summary>The largest values the bounds take: beyond them a bound no longer bounds anything (a body limit past what
    /// a request may hold in memory) or breaks where it is used (a request timeout past what a timer can wait).</summary>
    public const int MaxPort = 65535;
    public const int MaxTokensLimitCap = 1 << 24;
    public const int MaxMessagesCap = 1 << 20;
    public const int MaxConcurrentRequestsCap = 65536;
    public const long MaxRequestBodyCap = 1L << 30;
    public static readonly TimeSpan MaxRequestTimeout = TimeSpan.FromDays(7);
    public static readonly TimeSpan MaxShutdownTimeout = TimeSpan.FromHours(1);

    /// <summary>Checks every bound against its range; <see cref="KvqServer.Create"/> calls it, and kvq serve before it
    /// loads the model. Messages name kvq serve's option.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A value outside its range, named with the range.</exception>
    public void Validate()
    {
        static void Check(bool ok, string option, string name, object got, string range)
        {
            // No paramName: its "(Parameter ...)" suffix would break the one-line message kvq serve prints.
            if (!ok) throw new ArgumentOutOfRangeException(null, $"{option} {got}: expected {range} (KvqServerOptions.{name})");
        }
        Check(Port is >= 0 and <= MaxPort, "--port", nameof(Port), Port, $"0..{MaxPort}");
        Check(MaxTokensLimit is >= 1 and <= MaxTokensLimitCap, "--max-tokens-limit", nameof(MaxTokensLimit), MaxTokensLimit, $"1..{MaxTokensLimitCap}");
        Check(MaxMessages is >= 1 and <= MaxMessagesCap, "max messages", nameof(MaxMessages), MaxMessages, $"1..{MaxMessagesCap}");
        Check(MaxConcurrentRequests is >= 1 and <= MaxConcurrentRequestsCap, "--max-requests", nameof(MaxConcurrentRequests), MaxConcurrentRequests,
            $"1..{MaxConcurrentRequestsCap}");
        Check(MaxRequestBodyBytes is >= 1 and <= MaxRequestBodyCap, "--max-body", nameof(MaxRequestBodyBytes), MaxRequestBodyBytes,
            $"1 byte..{Bytes.Format(MaxRequestBodyCap)}");
        // Above 0 (the library may give less than a second; kvq serve gives whole seconds), within a timer's reach.
        Check(RequestTimeout > TimeSpan.Zero && RequestTimeout <= MaxRequestTimeout, "--request-timeout", nameof(RequestTimeout),
            $"{RequestTimeout.TotalSeconds:0.###}", $"above 0 and at most {MaxRequestTimeout.TotalSeconds:0} seconds");
        Check(ShutdownTimeout >= TimeSpan.Zero && ShutdownTimeout <= MaxShutdownTimeout, "--shutdown-timeout", nameof(ShutdownTimeout),
            $"{ShutdownTimeout.TotalSeconds:0}", $"0..{MaxShutdownTimeout.TotalSeconds:0} seconds");
    }
}
