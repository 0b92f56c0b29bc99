using System.CommandLine;
using Kvq.Sampling;

namespace Kvq.Cli.Commands;

/// <summary>kvq chat: a conversation in the terminal over the serving engine (history kept in its prefix cache).</summary>
public static class ChatCommand
{
    public static Command Create()
    {
        var setup = new EngineSetup();
        var system = new Option<string?>("--system", "-s") { Description = "system prompt" };
        var maxTokens = new Option<int>("--max-tokens", "-n") { Description = "most tokens per answer", DefaultValueFactory = _ => 512 };
        var temperature = new Option<float>("--temperature") { Description = "0 = greedy", DefaultValueFactory = _ => 0.8f };
        var topK = new Option<int>("--top-k") { Description = "keep the k most likely tokens (0 = off)", DefaultValueFactory = _ => 40 };
        var topP = new Option<float>("--top-p") { Description = "nucleus sampling mass (1 = off)", DefaultValueFactory = _ => 0.95f };
        var minP = new Option<float>("--min-p") { Description = "drop tokens below min-p x the top probability (0 = off)", DefaultValueFactory = _ => 0.05f };
        var seed = new Option<ulong>("--seed") { Description = "random seed", DefaultValueFactory = _ => 42UL };
        var cmd = new Command("chat", "talk with the model in the terminal (Ctrl-C stops an answer; /reset, /save FILE, /exit)")
        {
            system, maxTokens, temperature, topK, topP, minP, seed,
        };
        setup.AddTo(cmd);
        cmd.SetAction(r => CommandRunner.Run(() =>
        {
            if (r.GetValue(maxTokens) < 1) throw new CliException($"--max-tokens must be at least 1 (got {r.GetValue(maxTokens)})");
            using var built = setup.Build(r);
            var prompt = built.Chat ?? throw new CliException(
                $"{built.ModelId}: {built.ChatMissing}: pass one with --chat-template FILE (or use 'kvq generate')");
            var settings = new ChatSession.Settings
            {
                ModelId = built.ModelId,
                SystemPrompt = r.GetValue(system),
                MaxTokens = r.GetValue(maxTokens),
                Sampler = new SamplerOptions
                {
                    Temperature = r.GetValue(temperature), TopK = r.GetValue(topK), TopP = r.GetValue(topP), MinP = r.GetValue(minP), Seed = r.GetValue(seed),
                },
            };
            try
            {
                Serving.InferenceEngine.ValidateSampler(settings.Sampler);
            }
            catch (Serving.EngineRequestException e)
            {
                throw new CliException(e.Message);
            }
            var session = new ChatSession(built.Engine, prompt, settings, Console.In, Console.Out, Console.Error);
            // Ctrl-C stops the answer being written; with none running it ends the program as usual.
            ConsoleCancelEventHandler onCancel = (_, e) => e.Cancel = session.CancelAnswer();
            Console.CancelKeyPress += onCancel;
            try
            {
                session.RunAsync().GetAwaiter().GetResult();
            }
            finally
            {
                Console.CancelKeyPress -= onCancel;
            }
            return 0;
        }));
        return cmd;
    }
}
