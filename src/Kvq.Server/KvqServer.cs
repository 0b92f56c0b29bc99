using System.Net;
using System.Text.Json;
using Kvq.Server.OpenAi;
using Kvq.Serving;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OpenTelemetry.Metrics;

namespace Kvq.Server;

/// <summary>
/// An OpenAI-compatible HTTP server (ASP.NET Core on Kestrel) over one <see cref="InferenceEngine"/>: chat and text
/// completions (whole or streamed as server-sent events), models, health, Prometheus metrics, tokenize/detokenize.
/// The engine stays the caller's: dispose it after the server has stopped.
/// </summary>
public sealed class KvqServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    private KvqServer(WebApplication app, KvqServerOptions options)
    {
        _app = app;
        Options = options;
    }

    public KvqServerOptions Options { get; }

    /// <summary>The address the server listens on once started (with the port Kestrel picked for port 0).</summary>
    public Uri BaseAddress => new(_app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());

    /// <summary>Builds the server. Refuses (ArgumentException) a host that is not an IP address or "localhost", a
    /// non-loopback address without an API key, and a bound outside its range (<see cref="KvqServerOptions.Validate"/>:
    /// ArgumentOutOfRangeException).</summary>
    public static KvqServer Create(InferenceEngine engine, KvqServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(engine);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var address = Bind(options);
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.SetMinimumLevel(options.Verbose ? LogLevel.Information : LogLevel.Warning);
        // A failed start (port in use) is thrown to the caller, which reports it in one line: the host's own log of it
        // is a duplicate with a stack trace.
        builder.Logging.AddFilter("Microsoft.Extensions.Hosting.Internal.Host", LogLevel.None);
        builder.Services.Configure<ConsoleLifetimeOptions>(o => o.SuppressStatusMessages = !options.Verbose);
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = options.ShutdownTimeout);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Limits.MaxRequestBodySize = options.MaxRequestBodyBytes;
            k.Listen(address, options.Port);
        });
        if (options.CorsOrigins.Count > 0)
            builder.Services.AddCors(c => c.AddDefaultPolicy(p => p.WithOrigins([.. options.CorsOrigins])
                .WithMethods("GET", "POST").WithHeaders("Authorization", "Content-Type")));
        builder.Services.AddOpenTelemetry().WithMetrics(m => m
            .AddMeter(EngineMetrics.MeterName, "Microsoft.AspNetCore.Hosting", "Microsoft.AspNetCore.Server.Kestrel")
            .AddPrometheusExporter());

        var app = builder.Build();
        var mapper = new RequestMapper(engine, options);
        var gate = new RequestGate(options.MaxConcurrentRequests);
        var runner = new GenerationRunner(mapper, options, gate);
        var endpoints = new Endpoints(engine, options, mapper, runner);
        var log = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Kvq.Server");
        app.Use((ctx, next) => Errors(ctx, next, log));
        if (options.CorsOrigins.Count > 0) app.UseCors();
        if (options.ApiKey is { } key)
        {
            var check = new ApiKeyCheck(key);
            app.Use((ctx, next) =>
            {
                if (ctx.Request.Path == "/health" || HttpMethods.IsOptions(ctx.Request.Method) || check.IsValid(ctx.Request.Headers.Authorization))
                    return next(ctx);
                ctx.Response.Headers.WWWAuthenticate = "Bearer";
                throw new ApiException(401, "Incorrect or missing API key: send it as 'Authorization: Bearer KEY'", null, "invalid_api_key",
                    "invalid_request_error");
            });
        }
        endpoints.Map(app);
        app.MapPrometheusScrapingEndpoint("/metrics");
        app.MapFallback((RequestDelegate)(ctx =>
        {
            if (Endpoints.AllowedMethod(ctx.Request.Path.Value ?? "") is { } allowed)
                throw new ApiException(405, $"{ctx.Request.Method} {ctx.Request.Path}: this endpoint takes {allowed} only", null, "method_not_allowed");
            throw new ApiException(404, $"no such endpoint: {ctx.Request.Method} {ctx.Request.Path}", null, "not_found");
        }));
        return new KvqServer(app, options);
    }

    private static IPAddress Bind(KvqServerOptions options)
    {
        var host = options.Host.Trim();
        IPAddress address = host.Equals("localhost", StringComparison.OrdinalIgnoreCase) ? IPAddress.Loopback
            : host is "*" or "+" ? IPAddress.Any
            : IPAddress.TryParse(host.Trim('[', ']'), out var ip) ? ip
            : throw new ArgumentException($"--host {host}: give an IP address (127.0.0.1, ::1, 0.0.0.0) or localhost");
        if (!IPAddress.IsLoopback(address) && string.IsNullOrEmpty(options.ApiKey))
            throw new ArgumentException($"--host {host} is reachable from other machines: it needs an API key (--api-key or KVQ_API_KEY); " +
                                        "without one the server binds loopback only");
        return address;
    }

    /// <summary>Every failure of a request becomes an OpenAI-shaped error for that request alone.</summary>
    private static async Task Errors(HttpContext ctx, RequestDelegate next, ILogger log)
    {
        try
        {
            await next(ctx);
        }
        catch (Exception) when (ctx.RequestAborted.IsCancellationRequested)
        {
            // The client went away; nobody to answer.
        }
        catch (Exception e) when (!ctx.Response.HasStarted)
        {
            var error = e switch
            {
                ApiException a => a,
                EngineRequestException r => ApiException.From(r),
                BadHttpRequestException b => new ApiException(b.StatusCode, b.Message, null, "bad_request"),
                _ => null,
            };
            if (error == null)
            {
                log.LogError(e, "request {Method} {Path} failed", ctx.Request.Method, ctx.Request.Path);
                error = new ApiException(500, "the server failed on this request: " + e.Message, null, "internal_error");
            }
            ctx.Response.Clear();
            ctx.Response.StatusCode = error.Status;
            if (error.Status == 401) ctx.Response.Headers.WWWAuthenticate = "Bearer";
            if (error.Status == 405 && Endpoints.AllowedMethod(ctx.Request.Path.Value ?? "") is { } allowed) ctx.Response.Headers.Allow = allowed;
            ctx.Response.ContentType = "application/json";
            await ctx.Response.Body.WriteAsync(JsonSerializer.SerializeToUtf8Bytes(error.Body, OpenAiJson.Default.ErrorBody));
        }
        catch (Exception e)
        {
            // Failed after the answer began: this response is cut short; the server goes on.
            log.LogWarning(e, "request {Method} {Path} failed mid-response", ctx.Request.Method, ctx.Request.Path);
            ctx.Abort();
        }
    }

    private bool _started;

    public async Task StartAsync(CancellationToken cancel = default)
    {
        await _app.StartAsync(cancel);
        _started = true;
    }

    /// <summary>Stops listening, lets in-flight requests finish within <see cref="KvqServerOptions.ShutdownTimeout"/>,
    /// then cuts off the rest (their engine requests are cancelled).</summary>
    public Task StopAsync(CancellationToken cancel = default) => _app.StopAsync(cancel);

    /// <summary>Starts (unless started) and runs until SIGTERM or Ctrl-C (or <paramref name="cancel"/>), then stops as
    /// <see cref="StopAsync"/> does.</summary>
    public async Task RunAsync(CancellationToken cancel = default)
    {
        if (!_started) await StartAsync(cancel);
        await _app.WaitForShutdownAsync(cancel);
    }

    /// <summary>Fires when the server begins to stop.</summary>
    public CancellationToken Stopping => _app.Lifetime.ApplicationStopping;

    public ValueTask DisposeAsync() => _app.DisposeAsync();
}
