using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading.Channels;
using Kvq.Cache;
using Kvq.Generation;
using Kvq.Sampling;
using Kvq.Tokenizers;

namespace Kvq.Serving;

/// <summary>Where a request is: waiting for blocks, running (prefilling or decoding), or done.</summary>
internal enum RequestState { Waiting, Running, Finished }

/// <summary>
/// One request inside the engine: its tokens so far (prompt, then generated), how many of them its cache holds, and
/// the per-request pieces of generation (sampler, text decoder, stop strings) that survive preemption, so a preempted
/// request continues exactly where it was. Touched only by the engine thread, except <see cref="CancelRequested"/>.
/// </summary>
internal sealed class EngineRequest
{
    private readonly Channel<TokenEvent> _events = Channel.CreateUnbounded<TokenEvent>(new UnboundedChannelOptions { SingleWriter = true });
    private readonly TaskCompletionSource<CompletionResult> _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Sampler _sampler;
    private readonly TokenDecoder _decoder;
    private readonly StopStringFilter _stop;
    private readonly StringBuilder _text = new();
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private TimeSpan? _firstToken;
    private TimeSpan _lastToken;

    public EngineRequest(long id, long arrival, CompletionRequest request, ITokenizer tokenizer)
    {
        Id = id;
        Arrival = arrival;
        Request = request;
        Tokens = new List<int>(request.PromptTokens.Count + Math.Min(request.MaxTokens, 4096));
        Tokens.AddRange(request.PromptTokens);
        PromptLength = Tokens.Count;
        _sampler = new Sampler(request.Sampler);
        _decoder = new TokenDecoder(tokenizer);
        _stop = new StopStringFilter(request.StopStrings);
        Stream = new RequestStream(id, PromptLength, _events.Reader, _done.Task);
    }

    public long Id { get; }
    /// <summary>Submission order (FCFS among equal priorities).</summary>
    public long Arrival { get; }
    public CompletionRequest Request { get; }
    public int Priority => Request.Priority;
    public RequestStream Stream { get; }
    public RequestState State { get; set; } = RequestState.Waiting;
    /// <summary>Prompt, then generated tokens; the last generated one is not in the cache yet while decoding.</summary>
    public List<int> Tokens { get; }
    public int PromptLength { get; }
    public int Generated => Tokens.Count - PromptLength;
    /// <summary>The sequence holding this request's KV while it runs; null while waiting.</summary>
    public PagedKvSequence? Kv { get; set; }
    /// <summary>Tokens in the cache.</summary>
    public int Computed => Kv?.Length ?? 0;
    /// <summary>Tokens to run before the next sample: 1 when decoding, more while (re)computing.</summary>
    public int Pending => Tokens.Count - Computed;
    /// <summary>Whether the next tokens to run are prompt tokens (matrix-matrix chunks) or generated ones.</summary>
    public bool InPrompt => Computed < PromptLength;
    /// <summary>The KV of a request preempted by swapping, in host memory or a file until it runs again.</summary>
    public Cache.Storage.SwapTicket? Swapped { get; set; }
    public int CachedPromptTokens { get; set; }
    public int Preemptions { get; set; }
    public volatile bool CancelRequested;
    /// <summary>The caller's cancellation hook, removed when the request ends (a long-lived token must not collect them).</summary>
    public CancellationTokenRegistration Registration { get; set; }

    public TimeSpan Elapsed => _clock.Elapsed;

    /// <summary>Samples the next token from <paramref name="logits"/> and streams it. Returns the finish reason when the
    /// request is done (an end-of-generation token, a stop string, max tokens or the context limit).</summary>
    public FinishReason? Accept(ReadOnlySpan<float> logits, ITokenizer tokenizer, int contextTokens, EngineMetrics metrics)
    {
        int next = _sampler.Sample(logits, CollectionsMarshal.AsSpan(Tokens), PromptLength);
        var now = _clock.Elapsed;
        if (_firstToken == null)
        {
            _firstToken = now;
            metrics.TimeToFirstToken.Record(now.TotalSeconds);
        }
        else metrics.InterTokenLatency.Record((now - _lastToken).TotalSeconds);
        _lastToken = now;
        int index = Generated;
        if (!Request.IgnoreEndOfGeneration && tokenizer.IsEndOfGeneration(next)) return FinishReason.Stop;
        Tokens.Add(next);
        metrics.GeneratedTokens.Add(1);
        float logprob = float.NaN;
        IReadOnlyList<TokenLogprob>? top = null;
        if (Request.Logprobs) (logprob, top) = Logprobs.Of(logits, next, Request.TopLogprobs, tokenizer);
        string text = _stop.Push(_decoder.Add(next));
        FinishReason? reason = _stop.Stopped ? FinishReason.Stop
            : Generated >= Request.MaxTokens || Tokens.Count >= contextTokens ? FinishReason.Length : null;
        if (reason != null && !_stop.Stopped) text += _stop.Push(_decoder.Flush()) + _stop.Flush();
        _text.Append(text);
        _events.Writer.TryWrite(new TokenEvent(index, next, text, now, logprob, top));
        return reason;
    }

    /// <summary>Ends the request: what is still held back is streamed as a text-only event (token -1), then the result.</summary>
    public void Finish(FinishReason reason)
    {
        State = RequestState.Finished;
        if (reason != FinishReason.Cancelled)
        {
            string tail = _stop.Stopped ? "" : _stop.Push(_decoder.Flush()) + _stop.Flush();
            if (tail.Length > 0)
            {
                _text.Append(tail);
                _events.Writer.TryWrite(new TokenEvent(Generated, -1, tail, _clock.Elapsed, float.NaN));
            }
        }
        _events.Writer.TryComplete();
        Registration.Dispose();
        _done.TrySetResult(new CompletionResult(_text.ToString(), Tokens.GetRange(PromptLength, Generated), PromptLength, Generated,
            CachedPromptTokens, reason, _firstToken, _clock.Elapsed, Preemptions));
    }

    /// <summary>Ends the request with an error (it alone: the engine goes on).</summary>
    public void Fail(Exception error)
    {
        State = RequestState.Finished;
        Registration.Dispose();
        _events.Writer.TryComplete(error);
        _done.TrySetException(error);
    }
}
