using System.CommandLine;
using System.Diagnostics;
using Kvq.Cache;
using Kvq.Cache.Layout;
using Kvq.Cache.Sessions;
using Kvq.Cli.Validation;
using Kvq.Generation;
using Kvq.Model;
using Kvq.Sampling;

namespace Kvq.Cli.Commands;

/// <summary>kvq generate: stream a continuation of a prompt to stdout, timing to stderr.</summary>
public static class GenerateCommand
{
    public static Command Create()
    {
        var model = new ModelOptions();
        var prompt = new Option<string?>("--prompt", "-p") { Description = "prompt text" };
        var promptFile = new Option<string?>("--file", "-f") { Description = "read the prompt from this file ('-' = standard input)" };
        var maxTokens = CheckedOption.Int("--max-tokens", "tokens to generate", 128, ValueRange.Between(1, int.MaxValue), null, "-n");
        var ctx = ContextOption.Create("context window in tokens (prompt + generated); when full, the oldest tokens after the first " +
                                       $"{ContextWindow.DefaultKeep} are dropped and the recent half re-read (context shift)");
        var temperature = CheckedOption.Float("--temperature", "0 = greedy", 0.8f, ValueRange.AtLeast(0), "0 = greedy");
        var topK = CheckedOption.Int("--top-k", "keep the k most likely tokens (0 = off)", 40, ValueRange.AtLeast(0), "0 = off");
        var topP = CheckedOption.Float("--top-p", "nucleus sampling mass (1 = off)", 0.95f, new ValueRange(0, 1, MinOpen: true), "1 = off");
        var minP = CheckedOption.Float("--min-p", "drop tokens below min-p x the top probability (0 = off)", 0.05f, ValueRange.Between(0, 1), "0 = off");
        var repeat = CheckedOption.Float("--repeat-penalty", "repetition penalty over the last 64 tokens (1 = off)", 1.0f, ValueRange.Above(0), "1 = off");
        var seed = SeedOption.Create("random seed", 42);
        var stop = new Option<string[]>("--stop") { Description = "stop when this text appears (repeatable)", AllowMultipleArgumentsPerToken = false };
        var threads = CommonOptions.Threads();
        var kv = CommonOptions.Kv();
        var maxPpl = KvAuto.MaxPplIncrease();
        var profile = KvProfileOptions.Profile();
        var sink = KvProfileOptions.Sink();
        var policy = new KvPolicyOptions(grid: false);
        var offload = new KvOffloadOptions(grid: false);
        var sliding = new KvSlidingOption();
        var device = new DeviceOptions(gpus: true);
        var saveSession = new Option<string?>("--save-session")
        {
            Description = "once the prompt is in, save its compressed KV cache and last logits to this file (atomic; bound to the " +
                          "model and to --kv, --profile and --sink)",
        };
        var loadSession = new Option<string?>("--load-session")
        {
            Description = "start from a session saved by --save-session: the prompt must begin with the session's tokens (only the " +
                          "rest is run); without --prompt/--file the session's own tokens are the prompt",
        };
        var cmd = new Command("generate", "generate text from a prompt")
        {
            prompt, promptFile, maxTokens, ctx, temperature, topK, topP, minP, repeat, seed, stop, threads, kv, maxPpl, profile, sink,
            saveSession, loadSession,
        };
        model.AddTo(cmd);
        policy.AddTo(cmd);
        offload.AddTo(cmd);
        sliding.AddTo(cmd);
        device.AddTo(cmd);
        CheckedOption.Require(cmd, r => r.GetValue(prompt) != null && r.GetValue(promptFile) != null
            ? "--prompt and --file both give the prompt: use one" : null);
        cmd.SetAction(r => CommandRunner.Run(() =>
        {
            var policies = policy.Parse(r);
            if (policies.Count > 1) throw new CliException("generate takes one --policy");
            var where = device.Parse(r, policies);
            var offloads = offload.Parse(r);
            GpuOffload.CheckOptions(where, offloads.Count > 0, r.GetValue(offload.Dir));
            if (where.LaunchRanks() is { } ranksExit) return ranksExit;
            sliding.Check(r, policies, offloads.Count > 0, r.GetValue(sink), where.Cuda,
                session: r.GetValue(saveSession) != null || r.GetValue(loadSession) != null);
            if (r.GetValue(saveSession) is { } sessionOut) OutputFile.Check("--save-session", sessionOut);
            var p = ReadPrompt(r.GetValue(prompt), r.GetValue(promptFile));
            using var loaded = model.Load(r);
            int window = ContextOption.Resolve(r.GetValue(ctx), loaded.Weights.Config);
            var prof = KvProfileOptions.Load(r.GetValue(profile), loaded.Weights.Fingerprint);
            var config = sliding.Apply(r, offload.WithDir(r, KvProfileOptions.Config(r.GetValue(kv)!, prof, r.GetValue(sink), r.GetValue(maxPpl), loaded.Weights.Config.ContextLength) with { Policy = policies[0], Offload = offloads.Count > 0 ? offloads[0] : null }));
            GpuOffload.CheckFormat(where, config, loaded.Weights.Config);
            var lm = where.Load(loaded.Weights, r.GetValue(threads));
            using var lmOwner = lm as IDisposable;
            var options = new GenerationOptions
            {
                MaxTokens = r.GetValue(maxTokens),
                StopStrings = r.GetValue(stop) ?? [],
                Sampler = new SamplerOptions
                {
                    Temperature = r.GetValue(temperature),
                    TopK = r.GetValue(topK),
                    TopP = r.GetValue(topP),
                    MinP = r.GetValue(minP),
                    RepetitionPenalty = r.GetValue(repeat),
                    Seed = SeedOption.Resolve(r.GetValue(seed), Console.Error),
                },
            };
            var generator = new Generator(lm, loaded.Tokenizer);
            string? savePath = r.GetValue(saveSession), loadPath = r.GetValue(loadSession);
            KvSessionIdentity? identity = null;
            if (savePath != null || loadPath != null)
            {
                if (where.Cuda) throw new CliException("--save-session/--load-session keep the host cache: use --device cpu");
                if (policies[0] != null) throw new CliException("--save-session/--load-session: a cache under a token policy (--policy) cannot be saved");
                identity = ModelIdentity.Of(loaded.Weights, loaded.Tokenizer).Session(KvLayoutPlan.Build(lm.KvShape, config));
            }
            var loadClock = Stopwatch.StartNew();
            KvSession? session = loadPath == null ? null : KvSession.Load(loadPath, identity!);
            double loadSeconds = loadClock.Elapsed.TotalSeconds;
            bool promptGiven = r.GetValue(prompt) != null || r.GetValue(promptFile) != null;
            var promptTokens = session != null && !promptGiven ? session.Tokens.ToArray() : generator.EncodePrompt(p, options);
            if (session != null) CheckSessionPrefix(loadPath!, session.Tokens, promptTokens);
            if (session is { Logits.Length: 0 } && promptTokens.Length <= session.Tokens.Length)
                throw new CliException($"--load-session: {loadPath} holds a cached prefix without logits (a server's prompt cache): give a " +
                                       "--prompt or --file that continues it");
            var restored = session?.Restore();
            double startSeconds = loadClock.Elapsed.TotalSeconds;   // tokenizing (and with a session, reading and restoring it)
            if (session != null && !promptGiven) p = DecodeTokens(loaded.Tokenizer, promptTokens);
            if (promptTokens.Length >= window)
                throw new CliException($"the prompt is {promptTokens.Length} tokens, which leaves no room in the context window of {window} " +
                                       $"(--ctx; the model was trained on {loaded.Weights.Config.ContextLength}): shorten the prompt" +
                                       (window < loaded.Weights.Config.ContextLength ? " or give a larger --ctx" : ""));
            using var ctxWindow = ContextWindow.Shifting(lm, config, window, first: restored ?? GpuOffload.First(lm, config, window, promptTokens.Length));
            var stdout = Console.Out;
            stdout.Write(p);
            var promptState = identity == null ? null : new PromptState
            {
                RestoredLogits = session?.Logits is { Length: > 0 } restoredLogits ? restoredLogits : null,
                AfterPrompt = savePath == null ? null : (seq, logits) =>
                {
                    var saveClock = Stopwatch.StartNew();
                    KvSession.Capture((PagedKvSequence)seq, identity, logits).Save(savePath);
                    Console.Error.WriteLine($"session: saved {seq.Length} tokens to {savePath} ({new FileInfo(savePath).Length:N0} bytes) " +
                                            $"in {saveClock.Elapsed.TotalMilliseconds:F0} ms");
                },
            };
            var result = generator.Generate(promptTokens, options, ctxWindow, s => { stdout.Write(s); stdout.Flush(); }, prompt: promptState);
            stdout.WriteLine();
            stdout.Flush();
            int ran = result.PromptTokens - (session?.Tokens.Length ?? 0);
            Console.Error.WriteLine(
                (ran > 0 ? $"prompt: {result.PromptTokens} tokens, {ran / result.PromptSeconds:F1} tok/s | "
                         : $"prompt: {result.PromptTokens} tokens, all from the session | ") +
                $"decode: {result.GeneratedTokens} tokens, {result.DecodeTokensPerSecond:F1} tok/s | stop: {result.StopReason} | {lm.Device}");
            if (result.ContextShifts > 0)
                Console.Error.WriteLine($"context: window of {window} tokens full {result.ContextShifts} time(s); each time the first " +
                                        $"{ctxWindow.Keep} and the most recent {(window - ctxWindow.Keep) / 2} tokens were kept and re-read");
            Console.Error.WriteLine(MemoryLine(config, ctxWindow.Sequence, where));
            if (GpuOffload.Report(ctxWindow.Sequence) is { } offloadLine) Console.Error.WriteLine(offloadLine);
            if (session != null)
                Console.Error.WriteLine($"session: loaded {session.Tokens.Length} tokens from {loadPath} in {loadSeconds * 1000:F1} ms, " +
                                        $"ran {ran} more prompt tokens");
            if (identity != null)
                Console.Error.WriteLine($"time to first token: {(startSeconds + result.PromptSeconds) * 1000:F1} ms " +
                                        $"(tokenize and load session {startSeconds * 1000:F1} ms + run prompt {result.PromptSeconds * 1000:F1} ms)");
            return 0;
        }));
        return cmd;
    }

    /// <summary>A restored session continues only a prompt that starts with its tokens.</summary>
    private static void CheckSessionPrefix(string path, ReadOnlySpan<int> session, int[] prompt)
    {
        int n = Math.Min(session.Length, prompt.Length), i = 0;
        while (i < n && session[i] == prompt[i]) i++;
        if (i < session.Length)
            throw new CliException($"--load-session {path}: the prompt ({prompt.Length} tokens) does not start with the session's " +
                                   $"{session.Length} tokens (they differ at token {i}); give the session's text plus what follows, or no prompt");
    }

    private static string DecodeTokens(Tokenizers.ITokenizer tokenizer, ReadOnlySpan<int> tokens)
    {
        // As the prompt was written: BOS and the space the tokenizer put in front of the text dropped.
        if (tokens.Length > 0 && tokens[0] == tokenizer.BosId) tokens = tokens[1..];
        var decoder = new Tokenizers.TokenDecoder(tokenizer, atSequenceStart: true);
        var sb = new System.Text.StringBuilder();
        foreach (int t in tokens) sb.Append(decoder.Add(t));
        return sb.Append(decoder.Flush()).ToString();
    }

    /// <summary>The prompt from --prompt, or from --file (a file, or '-' for standard input); empty when neither is given.</summary>
    private static string ReadPrompt(string? text, string? file)
    {
        if (text != null) return text;
        if (file == null) return "";
        if (file == "-") return Console.In.ReadToEnd();
        TextInput.Check(file, "--file", Console.Error);
        return File.ReadAllText(file);
    }

    /// <summary>What the cache holds; "kept in layer 0" where a token policy may have dropped some (host cache).</summary>
    private static string MemoryLine(KvCacheConfig config, IKvSequence seq, DeviceChoice where)
    {
        var mem = seq.ReportMemory();
        var kept = seq is PagedKvSequence paged ? $", {paged.SlotCount(0)} kept in layer 0" : "";
        var held = seq is Cuda.Offload.OffloadedKvSequence ? "bytes over device and pinned host memory"
            : where.Cuda ? $"bytes of {where.MemoryKind}" : "bytes held";
        return $"KV cache {config.Name}: {mem.Tokens} tokens seen{kept}, {mem.TotalBytes:N0} {held} " +
               $"({mem.BitsPerElement:F2} bits/element, {mem.BytesPerToken:F0} bytes/token)";
    }
}
