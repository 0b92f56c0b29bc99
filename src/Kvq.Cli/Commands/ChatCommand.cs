using System.CommandLine;
using Kvq.Cli.Validation;
using Kvq.Sampling;

namespace Kvq.Cli.Commands;

/// <summary>kvq chat: a conversation in the terminal over the serving engine (history kept in its prefix cache).</summary>
public static class ChatCommand
{
    public static Command Create()
    {
        var setup = new EngineSetup();
        var system = new Option<string?>("--system", "-s") { Description = "system prompt" };
        // The same checks and messages as generate's (CheckedOption): a bad value is one line and exit code 2.
        var maxTokens = CheckedOption.Int("--max-tokens", "most tokens per answer", 512, ValueRange.Between(1, int.MaxValue), null, "-n");
        var temperature = CheckedOption.Float("--temperature", "0 = greedy", 0.8f, ValueRange.AtLeast(0), "0 = greedy");
        var topK = CheckedOption.Int("--top-k", "keep the k most likely tokens (0 = off)", 40, ValueRange.AtLeast(0), "0 = off");
        var topP = CheckedOption.Float("--top-p", "nucleus sampling mass (1 = off)", 0.95f, new ValueRange(0, 1, MinOpen: true), "1 = off");
        var minP = CheckedOption.Float("--min-p", "drop tokens below min-p x the top probability (0 = off)", 0.05f, ValueRange.Between(0, 1), "0 = off");
        var seed = SeedOption.Create("random seed", 42);
        var cmd = new Command("chat", "talk with the model in the terminal (Ctrl-C stops an answer; /reset, /save FILE, /help, /exit)")
        {
            system, maxTokens, temperature, topK, topP, minP, seed,
        };
        setup.AddTo(cmd);
        cmd.SetAction(r => CommandRunner.Run(() =>
        {
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
                    Temperature = r.GetValue(temperature), TopK = r.GetValue(topK), TopP = r.GetValue(topP), MinP = r.GetValue(minP), Seed = SeedOption.Resolve(r.GetValue(seed), Console.Error),
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
