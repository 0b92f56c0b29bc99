using Kvq.Serving;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace Kvq.Server.OpenAi;

/// <summary>
/// Runs one generation request against the engine and writes the answer, whole or as server-sent events ending with
/// "data: [DONE]". The request is cancelled (its KV blocks freed within a step) when the client goes away or the
/// request's time runs out; a failure of this request is written to this request alone.
/// </summary>
internal sealed class GenerationRunner(RequestMapper mapper, KvqServerOptions options, RequestGate gate)
{
    private static readonly byte[] DataPrefix = "data: "u8.ToArray();
    private static readonly byte[] EventEnd = "\n\n"u8.ToArray();
    private static readonly byte[] Done = "data: [DONE]\n\n"u8.ToArray();

    public async Task RunAsync(HttpContext ctx, Generation g, string promptParam, IResponseFormat format)
    {
        using var slot = gate.Enter();
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(ctx.RequestAborted);
        cancel.CancelAfter(options.RequestTimeout);
        var stream = mapper.Submit(g.Request, promptParam, cancel.Token);
        if (g.Stream) await StreamAsync(ctx, g, stream, format, cancel.Token);
        else await WholeAsync(ctx, stream, format, cancel.Token);
    }

    private async Task WholeAsync(HttpContext ctx, RequestStream stream, IResponseFormat format, CancellationToken cancel)
    {
        var events = new List<TokenEvent>();
        CompletionResult result;
        try
        {
            await foreach (var e in stream.WithCancellation(cancel)) events.Add(e);
            result = await stream.Completion;
        }
        catch (OperationCanceledException) when (cancel.IsCancellationRequested)
        {
            if (ctx.RequestAborted.IsCancellationRequested) return; // the client is gone
            throw TimedOut();
        }
        if (result.FinishReason == FinishReason.Cancelled)
        {
            if (ctx.RequestAborted.IsCancellationRequested) return;
            throw cancel.IsCancellationRequested ? TimedOut() : Stopped();
        }
        ctx.Response.ContentType = "application/json";
        await ctx.Response.Body.WriteAsync(format.Whole(result, events), ctx.RequestAborted);
    }

    private async Task StreamAsync(HttpContext ctx, Generation g, RequestStream stream, IResponseFormat format, CancellationToken cancel)
    {
        var response = ctx.Response;
        response.ContentType = "text/event-stream";
        response.Headers.CacheControl = "no-cache";
        response.Headers["X-Accel-Buffering"] = "no";
        ctx.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
        var aborted = ctx.RequestAborted;
        try
        {
            await response.StartAsync(aborted);
            if (format.Start() is { } start) await SendAsync(response, start, aborted);
            await foreach (var e in stream.WithCancellation(cancel))
                if (format.Delta(e) is { } chunk) await SendAsync(response, chunk, aborted);
            var result = await stream.Completion;
            if (result.FinishReason == FinishReason.Cancelled)
            {
                if (aborted.IsCancellationRequested) return;
                await SendAsync(response, Error(cancel.IsCancellationRequested ? TimedOut() : Stopped()), aborted);
            }
            else
            {
                await SendAsync(response, format.End(result.FinishReason), aborted);
                if (g.IncludeUsage) await SendAsync(response, format.UsageChunk(Finish.UsageOf(result)), aborted);
            }
            await response.Body.WriteAsync(Done, aborted);
            await response.Body.FlushAsync(aborted);
        }
        catch (Exception) when (aborted.IsCancellationRequested)
        {
            // The client went away mid-stream: the engine request is cancelled through the token; nothing to write.
        }
        catch (OperationCanceledException) when (cancel.IsCancellationRequested)
        {
            await SendAsync(response, Error(TimedOut()), aborted);
            await response.Body.WriteAsync(Done, aborted);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // This request failed in the engine (a model step): an error event ends its stream; the server goes on.
            await SendAsync(response, Error(new ApiException(500, $"generation failed: {e.Message}", null, "generation_failed")), aborted);
            await response.Body.WriteAsync(Done, aborted);
        }
    }

    private static async Task SendAsync(HttpResponse response, byte[] payload, CancellationToken cancel)
    {
        await response.Body.WriteAsync(DataPrefix, cancel);
        await response.Body.WriteAsync(payload, cancel);
        await response.Body.WriteAsync(EventEnd, cancel);
        await response.Body.FlushAsync(cancel);
    }

    private static byte[] Error(ApiException e) =>
        System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(e.Body, OpenAiJson.Default.ErrorBody);

    private ApiException TimedOut() =>
        new(504, $"the request took longer than the server's limit of {options.RequestTimeout.TotalSeconds:0} s and was stopped", null, "timeout");

    private static ApiException Stopped() => new(503, "the server is shutting down", null, "engine_stopped");
}

/// <summary>Counts generation requests in flight; past the cap they are refused (429) rather than queued without bound.</summary>
internal sealed class RequestGate(int max)
{
    private int _inFlight;

    public int InFlight => Volatile.Read(ref _inFlight);

    public IDisposable Enter()
    {
        if (Interlocked.Increment(ref _inFlight) > max)
        {
            Interlocked.Decrement(ref _inFlight);
            throw new ApiException(429, $"the server is at its limit of {max} concurrent requests; try again shortly", null, "too_many_requests");
        }
        return new Slot(this);
    }

    private sealed class Slot(RequestGate gate) : IDisposable
    {
        private int _done;
        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) == 0) Interlocked.Decrement(ref gate._inFlight);
        }
    }
}
