using System.CommandLine;
using Kvq.Cache;
using Kvq.Generation;
using Kvq.Model;
using Kvq.Sampling;

namespace Kvq.Cli.Commands;

/// <summary>kvq generate: stream a continuation of a prompt to stdout, timing to stderr.</summary>
public static class GenerateCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var prompt = new Option<string>("--prompt", "-p") { Description = "prompt text", DefaultValueFactory = _ => "" };
        var maxTokens = new Option<int>("--max-tokens", "-n") { Description = "tokens to generate", DefaultValueFactory = _ => 128 };
        var temperature = new Option<float>("--temperature") { Description = "0 = greedy", DefaultValueFactory = _ => 0.8f };
        var topK = new Option<int>("--top-k") { Description = "keep the k most likely tokens (0 = off)", DefaultValueFactory = _ => 40 };
        var topP = new Option<float>("--top-p") { Description = "nucleus sampling mass (1 = off)", DefaultValueFactory = _ => 0.95f };
        var minP = new Option<float>("--min-p") { Description = "drop tokens below min-p x the top probability (0 = off)", DefaultValueFactory = _ => 0.05f };
        var repeat = new Option<float>("--repeat-penalty") { Description = "repetition penalty over the last 64 tokens (1 = off)", DefaultValueFactory = _ => 1.0f };
        var seed = new Option<ulong>("--seed") { Description = "random seed", DefaultValueFactory = _ => 42UL };
        var stop = new Option<string[]>("--stop") { Description = "stop when this text appears (repeatable)", AllowMultipleArgumentsPerToken = false };
        var threads = CommonOptions.Threads();
        var kv = CommonOptions.Kv();
        var profile = KvProfileOptions.Profile();
        var sink = KvProfileOptions.Sink();
        var policy = new KvPolicyOptions(grid: false);
        var device = new DeviceOptions();
        var cmd = new Command("generate", "generate text from a prompt")
        {
            model, prompt, maxTokens, temperature, topK, topP, minP, repeat, seed, stop, threads, kv, profile, sink,
        };
        policy.AddTo(cmd);
        device.AddTo(cmd);
        cmd.SetAction(r => CommandRunner.Run(() =>
        {
            var policies = policy.Parse(r);
            if (policies.Count > 1) throw new CliException("generate takes one --policy");
            var where = device.Parse(r, policies);
            using var loaded = ModelLoader.Load(DefaultPaths.ResolveModel(r.GetValue(model)));
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
                    Seed = r.GetValue(seed),
                },
            };
            var generator = new Generator(lm, loaded.Tokenizer);
            var p = r.GetValue(prompt) ?? "";
            var promptTokens = generator.EncodePrompt(p, options);
            var seq = lm.CreateSequence(config, promptTokens.Length + Math.Max(0, options.MaxTokens));
            using var seqOwner = seq as IDisposable;
            var stdout = Console.Out;
            stdout.Write(p);
            var result = generator.Generate(promptTokens, options, seq, s => { stdout.Write(s); stdout.Flush(); });
            stdout.WriteLine();
            stdout.Flush();
            Console.Error.WriteLine(
                $"prompt: {result.PromptTokens} tokens, {result.PromptTokensPerSecond:F1} tok/s | " +
                $"decode: {result.GeneratedTokens} tokens, {result.DecodeTokensPerSecond:F1} tok/s | stop: {result.StopReason} | {lm.Device}");
            Console.Error.WriteLine(MemoryLine(config, seq, where));
            return 0;
        }));
        return cmd;
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
