using System.Diagnostics;
using Kvq.Cuda;
using Kvq.Cuda.Distributed;

namespace Kvq.Cli.Commands;

/// <summary>
/// `--gpus N` (docs/multigpu.md): kvq starts itself once per GPU, NCCL's usual one process per device. The launcher
/// checks that N devices exist, makes the NCCL unique id and passes it with the rank and world size in the
/// environment (<see cref="RankEnv"/>, <see cref="WorldEnv"/>, <see cref="IdEnv"/>); rank r runs on GPU r, rank 0's
/// standard output is this process's, the others' is dropped (every rank computes the same tokens), standard error is
/// shared. When a rank exits with an error or dies, the launcher stops the others and says which rank it was.
/// </summary>
public static class RankLauncher
{
    public const string RankEnv = "KVQ_RANK", WorldEnv = "KVQ_WORLD", IdEnv = "KVQ_NCCL_ID";

    /// <summary>This process's rank and world size when a launcher started it; null in the launcher itself.</summary>
    public static (int Rank, int World, string Id)? Current()
    {
        var r = Environment.GetEnvironmentVariable(RankEnv);
        if (string.IsNullOrEmpty(r)) return null;
        if (!int.TryParse(r, out int rank) || !int.TryParse(Environment.GetEnvironmentVariable(WorldEnv), out int world) || rank < 0 || rank >= world)
            throw new CliException($"{RankEnv}={r} {WorldEnv}={Environment.GetEnvironmentVariable(WorldEnv)}: not a rank of a world (set by kvq --gpus)");
        return (rank, world, Environment.GetEnvironmentVariable(IdEnv) ?? "");
    }

    /// <summary>The launcher's side of --gpus <paramref name="gpus"/>: checks the devices, makes the unique id and runs
    /// this same command line once per GPU. Returns the exit code (0 when every rank succeeded).</summary>
    public static int Launch(int gpus)
    {
        int count;
        try { count = CudaContext.DeviceCount(); }
        catch (CudaUnavailableException e) { throw new CliException($"--gpus {gpus}: CUDA is not available: {e.Reason}"); }
        if (gpus > count)
            throw new CliException($"--gpus {gpus}: this machine has {count} CUDA device{(count == 1 ? "" : "s")}");
        string id;
        try { id = NcclCommunicator.CreateUniqueId(); }
        catch (CudaUnavailableException e)
        {
            throw new CliException($"--gpus {gpus}: NCCL is not available: {e.Reason} (set KVQ_NCCL to libnccl.so.2, e.g. the one in PyTorch's nvidia/nccl/lib)");
        }
        var (file, args) = SelfCommand();
        return Run(file, args, gpus, rank => new Dictionary<string, string>
        {
            [RankEnv] = rank.ToString(System.Globalization.CultureInfo.InvariantCulture),
            [WorldEnv] = gpus.ToString(System.Globalization.CultureInfo.InvariantCulture),
            [IdEnv] = id,
        }, Console.Error);
    }

    /// <summary>How to start this program again with the same arguments (a NativeAOT or apphost binary, or dotnet kvq.dll).</summary>
    private static (string File, string[] Args) SelfCommand()
    {
        var all = Environment.GetCommandLineArgs();
        var exe = Environment.ProcessPath ?? throw new CliException("--gpus: cannot tell which program to start for the ranks");
        bool viaDotnet = Path.GetFileNameWithoutExtension(exe) == "dotnet" && all.Length > 0 && all[0].EndsWith(".dll", StringComparison.OrdinalIgnoreCase);
        return viaDotnet ? (exe, all) : (exe, all[1..]);
    }

    /// <summary>Runs <paramref name="world"/> copies of a command, each with its rank's environment; waits for all.
    /// The first rank to fail (non-zero exit) stops the others (they would wait for it in a collective); the message
    /// names it. Returns 0 when all succeed, else 1 (or the failed rank's code when it is 2, a user error).</summary>
    public static int Run(string file, IReadOnlyList<string> args, int world, Func<int, IDictionary<string, string>> env, TextWriter log)
    {
        var ranks = new Process[world];
        try
        {
            for (int r = 0; r < world; r++)
            {
                var psi = new ProcessStartInfo(file) { UseShellExecute = false, RedirectStandardOutput = r > 0 };
                foreach (var a in args) psi.ArgumentList.Add(a);
                foreach (var (k, v) in env(r)) psi.Environment[k] = v;
                ranks[r] = Process.Start(psi) ?? throw new CliException($"--gpus: rank {r} could not be started ({file})");
                if (r > 0)
                {
                    ranks[r].OutputDataReceived += (_, _) => { };
                    ranks[r].BeginOutputReadLine();
                }
            }
            var running = new HashSet<int>(Enumerable.Range(0, world));
            while (running.Count > 0)
            {
                foreach (int r in running.ToArray())
                {
                    if (!ranks[r].HasExited) continue;
                    ranks[r].WaitForExit();
                    running.Remove(r);
                    int code = ranks[r].ExitCode;
                    if (code == 0) continue;
                    Stop(ranks, running);
                    string how = code > 128 && OperatingSystem.IsLinux() ? $"was killed by signal {code - 128}" : $"exited with code {code}";
                    log.WriteLine($"kvq: --gpus {world}: rank {r} (GPU {r}) {how}; the other ranks were stopped");
                    return code == 2 ? 2 : 1;
                }
                if (running.Count > 0) Thread.Sleep(50);
            }
            return 0;
        }
        finally
        {
            foreach (var p in ranks) p?.Dispose();
        }
    }

    private static void Stop(Process[] ranks, HashSet<int> running)
    {
        foreach (int r in running)
        {
            try { ranks[r].Kill(entireProcessTree: true); }
            catch (InvalidOperationException) { /* it exited meanwhile */ }
            ranks[r].WaitForExit();
        }
        running.Clear();
    }
}
