using System.CommandLine;
using Kvq.Cache;
using Kvq.Cli.Validation;
using Kvq.Generation;
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
        var profile = KvProfileOptions.Profile();
        var sink = KvProfileOptions.Sink();
        var policy = new KvPolicyOptions(grid: false);
        var device = new DeviceOptions();
        var cmd = new Command("generate", "generate text from a prompt")
        {
            prompt, promptFile, maxTokens, ctx, temperature, topK, topP, minP, repeat, seed, stop, threads, kv, profile, sink,
        };
        model.AddTo(cmd);
        policy.AddTo(cmd);
        device.AddTo(cmd);
        CheckedOption.Require(cmd, r => r.GetValue(prompt) != null && r.GetValue(promptFile) != null
            ? "--prompt and --file both give the prompt: use one" : null);
        cmd.SetAction(r => CommandRunner.Run(() =>
        {
            var policies = policy.Parse(r);
            if (policies.Count > 1) throw new CliException("generate takes one --policy");
            var where = device.Parse(r, policies);
            var p = ReadPrompt(r.GetValue(prompt), r.GetValue(promptFile));
            using var loaded = model.Load(r);
            int window = ContextOption.Resolve(r.GetValue(ctx), loaded.Weights.Config);
            var prof = KvProfileOptions.Load(r.GetValue(profile), loaded.Weights.Fingerprint);
            var config = KvProfileOptions.Config(r.GetValue(kv)!, prof, r.GetValue(sink)) with { Policy = policies[0] };
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
            var promptTokens = generator.EncodePrompt(p, options);
            if (promptTokens.Length >= window)
                throw new CliException($"the prompt is {promptTokens.Length} tokens, which leaves no room in the context window of {window} " +
                                       $"(--ctx; the model was trained on {loaded.Weights.Config.ContextLength}): shorten the prompt" +
                                       (window < loaded.Weights.Config.ContextLength ? " or give a larger --ctx" : ""));
            using var ctxWindow = ContextWindow.Shifting(lm, config, window);
            var stdout = Console.Out;
            stdout.Write(p);
            var result = generator.Generate(promptTokens, options, ctxWindow, s => { stdout.Write(s); stdout.Flush(); });
            stdout.WriteLine();
            stdout.Flush();
            Console.Error.WriteLine(
                $"prompt: {result.PromptTokens} tokens, {result.PromptTokensPerSecond:F1} tok/s | " +
                $"decode: {result.GeneratedTokens} tokens, {result.DecodeTokensPerSecond:F1} tok/s | stop: {result.StopReason} | {lm.Device}");
            if (result.ContextShifts > 0)
                Console.Error.WriteLine($"context: window of {window} tokens full {result.ContextShifts} time(s); each time the first " +
                                        $"{ctxWindow.Keep} and the most recent {(window - ctxWindow.Keep) / 2} tokens were kept and re-read");
            Console.Error.WriteLine(MemoryLine(config, ctxWindow.Sequence, where));
            return 0;
        }));
        return cmd;
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
        var held = where.Cuda ? $"bytes of {where.MemoryKind}" : "bytes held";
        return $"KV cache {config.Name}: {mem.Tokens} tokens seen{kept}, {mem.TotalBytes:N0} {held} " +
               $"({mem.BitsPerElement:F2} bits/element, {mem.BytesPerToken:F0} bytes/token)";
    }
}
