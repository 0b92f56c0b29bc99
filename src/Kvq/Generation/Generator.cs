using System.Diagnostics;
using System.Text;
using Kvq.Cache;
using Kvq.Model;
using Kvq.Sampling;
using Kvq.Tokenizers;

namespace Kvq.Generation;

/// <summary>Prompt in, streamed text out: tokenize, prefill, then sample and decode one token at a time. The sequence
/// passed in must come from the model's <see cref="ILanguageModel.CreateSequence"/> (or be one it can attend over).</summary>
public sealed class Generator(ILanguageModel model, ITokenizer tokenizer)
{
    public ILanguageModel Model => model;
    public ITokenizer Tokenizer => tokenizer;

    /// <param name="onText">Called with each piece of text as soon as it is final.</param>
    public GenerationResult Generate(string prompt, GenerationOptions options, IKvSequence kv, Action<string>? onText = null,
        CancellationToken cancel = default) =>
        Generate(EncodePrompt(prompt, options), options, kv, onText, cancel);

    /// <summary>Starts generating on a background thread and returns at once: <c>await foreach</c> the text pieces, then
    /// <c>await stream.Completion</c> for the result. The prompt is tokenized (and checked) before this returns. The
    /// sequence belongs to the generation until <see cref="GenerationStream.Completion"/> completes.</summary>
    public GenerationStream GenerateAsync(string prompt, GenerationOptions options, IKvSequence kv, CancellationToken cancel = default)
    {
        CheckStreamCapacity(options);
        var tokens = EncodePrompt(prompt, options);
        return GenerationStream.Start(onText => Generate(tokens, options, kv, onText, cancel), options.StreamCapacity, cancel);
    }

    /// <summary>As <see cref="GenerateAsync(string, GenerationOptions, IKvSequence, CancellationToken)"/>, in a
    /// <see cref="ContextWindow"/> (a shifting one goes on past its size).</summary>
    public GenerationStream GenerateAsync(int[] promptTokens, GenerationOptions options, ContextWindow window,
        CancellationToken cancel = default)
    {
        CheckStreamCapacity(options);
        return GenerationStream.Start(onText => Generate(promptTokens, options, window, onText, cancel: cancel), options.StreamCapacity, cancel);
    }

    private static void CheckStreamCapacity(GenerationOptions options)
    {
        if (options.StreamCapacity is < 1)
            throw new ArgumentOutOfRangeException(nameof(options), options.StreamCapacity,
                $"GenerationOptions.StreamCapacity must be at least 1 piece, or null for no bound (got {options.StreamCapacity})");
    }

    /// <summary>The prompt's tokens as <see cref="Generate(string, GenerationOptions, IKvSequence, Action{string}?, CancellationToken)"/>
    /// feeds them (to size a sequence before generating: prompt + <see cref="GenerationOptions.MaxTokens"/>).</summary>
    public int[] EncodePrompt(string prompt, GenerationOptions options)
    {
        var promptTokens = tokenizer.Encode(prompt, options.AddBos ?? tokenizer.AddBos);
        if (promptTokens.Length == 0) throw new ArgumentException("the prompt is empty and the model adds no BOS token");
        return promptTokens;
    }

    public GenerationResult Generate(int[] promptTokens, GenerationOptions options, IKvSequence kv, Action<string>? onText = null,
        CancellationToken cancel = default)
    {
        using var window = ContextWindow.Over(kv);
        return Generate(promptTokens, options, window, onText, cancel: cancel);
    }

    /// <summary>Generates in <paramref name="window"/>: a full fixed window stops with <see cref="StopReason.ContextFull"/>,
    /// a shifting one drops old tokens and goes on. The prompt must fit in the window.</summary>
    /// <param name="prompt">With a restored session: the window's sequence already holds the prompt's first tokens (they
    /// must be its first tokens; only the rest is run), and the logits after them; and a hook to save the prompt.</param>
    public GenerationResult Generate(int[] promptTokens, GenerationOptions options, ContextWindow window, Action<string>? onText = null,
        PromptState? prompt = null, CancellationToken cancel = default)
    {
        int held = prompt == null ? 0 : window.Sequence.Length;
        if (held > promptTokens.Length)
            throw new ArgumentException($"the sequence already holds {held} tokens, more than the prompt's {promptTokens.Length}");
        if (held > 0 && held == promptTokens.Length && prompt!.RestoredLogits == null)
            throw new ArgumentException("the sequence holds the whole prompt but no logits were restored for its last token");
        if (prompt?.RestoredLogits is { } restored && restored.Length != model.Config.VocabSize)
            throw new ArgumentException($"{restored.Length} restored logits for a vocabulary of {model.Config.VocabSize}");
        if (!window.Fits(promptTokens.Length - held))
            throw new ArgumentException($"the prompt is {promptTokens.Length} tokens, more than the context window of {window.Size} " +
                                        $"(with {window.Sequence.Length} already in it)");
        int vocab = model.Config.VocabSize;
        var logits = new float[vocab];
        var sampler = new Sampler(options.Sampler);
        var history = new List<int>(promptTokens);
        var decoder = new TokenDecoder(tokenizer);
        var stop = new StopStringFilter(options.StopStrings);
        var text = new StringBuilder();
        void Emit(string s)
        {
            if (s.Length == 0) return;
            text.Append(s);
            onText?.Invoke(s);
        }

        var sw = Stopwatch.StartNew();
        if (held < promptTokens.Length) model.Forward(promptTokens.AsSpan(held), window.Sequence, logits);
        else prompt!.RestoredLogits.AsSpan().CopyTo(logits);
        double promptSeconds = sw.Elapsed.TotalSeconds;
        prompt?.AfterPrompt?.Invoke(window.Sequence, logits);
        sw.Restart();
        int generated = 0;
        var reason = StopReason.MaxTokens;
        var one = new int[1];
        while (generated < options.MaxTokens)
        {
            if (cancel.IsCancellationRequested) { reason = StopReason.Cancelled; break; }
            int next = sampler.Sample(logits, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(history));
            generated++;
            if (tokenizer.IsEndOfGeneration(next)) { reason = StopReason.EndOfGeneration; break; }
            history.Add(next);
            Emit(stop.Push(decoder.Add(next)));
            if (stop.Stopped) { reason = StopReason.StopString; break; }
            if (generated >= options.MaxTokens) break;
            one[0] = next;
            if (window.Fits(1)) model.Forward(one, window.Sequence, logits);
            else if (window.CanShift) model.Forward(window.Shift(history), window.Sequence, logits);
            else { reason = StopReason.ContextFull; break; }
        }
        Emit(stop.Push(decoder.Flush()));
        Emit(stop.Flush());
        return new GenerationResult(text.ToString(), promptTokens.Length, generated, promptSeconds, sw.Elapsed.TotalSeconds, reason, window.Shifts);
    }
}
