using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Kvq.Cli;

/// <summary>
/// One kvq command that runs the fastest NativeAOT build the CPU can take. NativeAOT fixes
/// <c>Vector256/Vector512.IsHardwareAccelerated</c> when it compiles (they are not among the instruction sets it can test
/// at run time, unlike <c>Avx2.IsSupported</c>), so one image cannot hold both the AVX-512 kernels and a fallback, and
/// an image built for AVX-512 refuses to start without it. <c>dev/publish-kvq.sh</c> therefore publishes the portable
/// build as <c>kvq</c> and the x86-64-v3 (AVX2, FMA) and x86-64-v4 (AVX-512) builds beside it as
/// <c>kvq-x86-64-v3</c> and <c>kvq-x86-64-v4</c>; at start, before anything else, <c>kvq</c> replaces itself (exec, same
/// arguments, same process id) with the highest of them that is present and that the CPU supports. The JIT build picks
/// its instruction sets at run time and never dispatches. <c>KVQ_ISA_DISPATCH=0</c> keeps the binary that was started.
/// </summary>
public static partial class IsaDispatch
{
    public const string EnvSwitch = "KVQ_ISA_DISPATCH";

    /// <summary>The sibling builds, fastest first: file name, the /proc/cpuinfo flags the CPU needs, and the level
    /// (4 = x86-64-v4, 3 = x86-64-v3; the portable build is 2).</summary>
    private static readonly (string File, string[] Flags, int Level)[] Levels =
    [
        ("kvq-x86-64-v4", ["avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl", "avx2", "fma", "bmi1", "bmi2"], 4),
        ("kvq-x86-64-v3", ["avx2", "fma", "bmi1", "bmi2", "abm", "movbe", "f16c"], 3),
    ];

    /// <summary>The level this image was compiled for, as its vector widths show.</summary>
    public static int CurrentLevel => Vector512.IsHardwareAccelerated ? 4 : Vector256.IsHardwareAccelerated ? 3 : 2;

    /// <summary>Execs the fastest sibling build the CPU supports, if it beats this one; returns when none does (or the
    /// exec failed, which leaves this build running: slower, never wrong).</summary>
    public static void ToFastestBuild(string[] args)
    {
        if (RuntimeFeature.IsDynamicCodeSupported) return;   // the JIT build: instruction sets chosen at run time
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64) return;
        if (Environment.GetEnvironmentVariable(EnvSwitch) == "0") return;
        var self = Environment.ProcessPath;
        if (self == null) return;
        var target = Choose(Path.GetDirectoryName(self)!, CurrentLevel, CpuFlags(), File.Exists);
        if (target == null) return;
        var argv = new string?[args.Length + 2];
        argv[0] = target;
        args.CopyTo(argv, 1);
        Execv(target, argv);
    }

    /// <summary>The sibling to run, or null to stay: the highest level above <paramref name="current"/> whose file is
    /// in <paramref name="folder"/> and whose flags the CPU has.</summary>
    public static string? Choose(string folder, int current, IReadOnlySet<string> cpuFlags, Func<string, bool> exists)
    {
        foreach (var (file, flags, level) in Levels)
        {
            if (level <= current) return null;
            var path = Path.Combine(folder, file);
            if (flags.All(cpuFlags.Contains) && exists(path)) return path;
        }
        return null;
    }

    /// <summary>The CPU's feature flags as the kernel reports them (it leaves out what the OS does not enable, such as
    /// AVX-512 state without XSAVE support); empty when unreadable.</summary>
    private static HashSet<string> CpuFlags()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
                if (line.StartsWith("flags", StringComparison.Ordinal) && line.IndexOf(':') is var colon and > 0)
                    return [.. line[(colon + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries)];
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return [];
    }

    [LibraryImport("libc", EntryPoint = "execv", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Execv(string path, string?[] argv);
}
