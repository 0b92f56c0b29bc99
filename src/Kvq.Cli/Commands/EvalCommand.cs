using System.CommandLine;
using Kvq.Cache.Codecs;
using Kvq.Cli.Commands.Eval;

namespace Kvq.Cli.Commands;

/// <summary>kvq eval: quality of KV cache formats on real text; one subcommand per measure (Commands/Eval/).</summary>
public static class EvalCommand
{
    public static Command Create()
    {
        var list = new Option<bool>("--list") { Description = "print the registered KV formats (names for --kv) and token policies (--policy) and exit" };
        var cmd = new Command("eval", "measure the quality of KV cache formats (ppl, kl, recall, passkey, needle, memory)") { list };
        cmd.Add(PplCommand.Create());
        cmd.Add(KlCommand.Create());
        cmd.Add(RecallCommand.Create());
        cmd.Add(PasskeyCommand.Create());
        cmd.Add(NeedleCommand.Create());
        cmd.Add(MemoryCommand.Create());
        cmd.SetAction(r =>
        {
            if (!r.GetValue(list))
            {
                Console.Error.WriteLine("kvq: eval needs a subcommand (ppl, kl, recall, passkey, needle, memory) or --list; see 'kvq eval --help'");
                return 2;
            }
            PrintFormats();
            return 0;
        });
        return cmd;
    }

    private static void PrintFormats()
    {
        Console.WriteLine("KV formats (--kv NAME, or KEYS/VALUES for different key and value formats):");
        foreach (var (name, description) in KvCodecRegistry.Formats)
            Console.WriteLine($"  {name,-10} {description}");
        Console.WriteLine();
        Console.WriteLine("Token policies (--policy NAME[:ARGS] with --budget 0.25|512 and --budget-per head|layer; 'none' keeps every token):");
        foreach (var (name, description) in Cache.Policies.KvPolicyRegistry.Policies)
            Console.WriteLine($"  {name,-10} {description}");
    }
}
