using Kvq.Cuda;
using Kvq.Cuda.Attention;

namespace Kvq.KernelLab;

/// <summary>
/// Every nuq decode kernel version, for the lab and its GPU test: production's module (<see cref="DecodeKernels"/>:
/// version 9, the f16 kernels, the reduce) and the lab's own, Kernels/decode_attention_lab.cu (versions 1-8 and
/// 10-18), embedded in this assembly and compiled by NVRTC on first use with Kvq.Cuda's shared headers. Production
/// never loads the lab file.
/// </summary>
public sealed class DecodeKernelVersions : IDisposable
{
    public const string SourceFile = "decode_attention_lab.cu";
    public const string ResourcePrefix = "Kvq.KernelLab.Kernels.";
    public const int FirstVersion = 1, LastVersion = 18;
    /// <summary>The first version with the dense and sparse-key layouts.</summary>
    public const int FirstLayoutVersion = 6;

    /// <summary>Relative L2 error against the CPU codec reference that a version must stay under: 2e-4, and 1e-3 for
    /// v13+ on a GQA group, which rounds each whole value and each softmax weight to f16 once per token (2^-12
    /// relative each, as FlashAttention-class f16 kernels do): on random zero-mean values the output is itself an
    /// average of about that size, so the rounding does not shrink relative to it.</summary>
    public static double CheckTolerance(int version, int group) => version >= 13 && group > 1 ? 1e-3 : 2e-4;

    private readonly DecodeKernels _production;
    private CudaModule? _lab;

    public DecodeKernelVersions(DecodeKernels production) => _production = production;

    public DecodeKernels Production => _production;

    /// <summary>The lab file's text (embedded resource of this assembly).</summary>
    public static string Source() => KernelSources.Read(SourceFile, typeof(DecodeKernelVersions).Assembly, ResourcePrefix);

    /// <summary>Whether production's module holds the kernel: f16, version 9, and versions 11 and 12 for MHA (they change
    /// only the GQA path, so for G = 1 they are version 9).</summary>
    public static bool InProduction(int keyBits, int group, int version) =>
        keyBits == 16 || version == DecodeKernels.NuqVersion || (version >= 11 && group == 1);

    /// <summary>Whether a kernel of this version exists (in production's module or the lab file): every version for
    /// nuq2-4 at G = 1 and 4 in the slots layout, the dense and sparse-key layouts from version 6 on, versions 10 and
    /// 15-18 at 4 bits only, versions 11-18 for G = 4 (for G = 1 they are version 9); f16 at G = 1 and 4 whatever the version.</summary>
    public static bool Compiled(int keyBits, int valueBits, int group, int version, NuqLayout layout = NuqLayout.Slots)
    {
        if (version is < FirstVersion or > LastVersion || !DecodeKernels.Groups.Contains(group)) return false;
        if (keyBits == 16) return valueBits == 16;
        if (keyBits != valueBits || !DecodeKernels.NuqBits.Contains(keyBits)) return false;
        if (layout != NuqLayout.Slots && version < FirstLayoutVersion) return false;
        return version is not (10 or 15 or 16 or 17 or 18) || keyBits == 4;
    }

    /// <summary>The entry name of a decode kernel of any version (production's or the lab file's); what neither
    /// compiles throws.</summary>
    public static string AttentionName(int keyBits, int valueBits, int group, int version, NuqLayout layout = NuqLayout.Slots)
    {
        if (version is < FirstVersion or > LastVersion)
            throw new ArgumentOutOfRangeException(nameof(version), version, $"decode kernel versions are {FirstVersion} to {LastVersion}");
        if (keyBits != 16 && layout != NuqLayout.Slots && version < FirstLayoutVersion)
            throw new NotSupportedException($"the {layout} nuq layout is compiled for kernel versions {FirstLayoutVersion} and up only (asked: v{version})");
        if (!Compiled(keyBits, valueBits, group, version, layout))
            throw new NotSupportedException($"no decode kernel v{version} for keys {keyBits} bits, values {valueBits} bits, {group} query heads per KV head, {layout} layout");
        if (InProduction(keyBits, group, version)) return DecodeKernels.AttentionName(keyBits, valueBits, group, layout);
        return $"attn_nuq_k{keyBits}_v{valueBits}_g{group}_r{version}{DecodeKernels.LayoutSuffix(layout)}";
    }

    public CudaKernel Attention(int keyBits, int valueBits, int group, int version, NuqLayout layout = NuqLayout.Slots)
    {
        var name = AttentionName(keyBits, valueBits, group, version, layout);   // checks the version and the layout
        return InProduction(keyBits, group, version) ? _production.Attention(keyBits, valueBits, group, layout) : Lab().Kernel(name);
    }

    /// <summary>The split kernels of one version, for <see cref="DecodeAttention.Split"/>.</summary>
    public ISplitKernels For(int version)
    {
        if (version is < FirstVersion or > LastVersion)
            throw new ArgumentOutOfRangeException(nameof(version), version, $"decode kernel versions are {FirstVersion} to {LastVersion}");
        return version == DecodeKernels.NuqVersion ? _production : new OneVersion(this, version);
    }

    /// <summary>The kernels the lab lists at start (registers, local and static shared bytes): (key bits, G, version,
    /// layout); a dense entry of the list stands for both the dense and the sparse-key layout.</summary>
    public static readonly IReadOnlyList<(int Bits, int Group, int Version, NuqLayout Layout)> Listed =
        new (int, int, int, bool)[] {(16, 1, 1, false), (16, 4, 1, false), (4, 1, 1, false), (4, 4, 1, false), (4, 1, 2, false),
            (4, 4, 2, false), (4, 1, 3, false), (4, 4, 3, false), (4, 1, 4, false), (4, 4, 4, false), (4, 1, 5, false), (4, 4, 5, false), (4, 1, 6, false),
            (3, 1, 6, false), (2, 1, 6, false), (4, 4, 6, false), (3, 4, 6, false), (2, 4, 6, false), (4, 1, 6, true), (2, 1, 6, true), (4, 4, 6, true), (2, 4, 6, true),
            (4, 1, 7, false), (3, 1, 7, false), (2, 1, 7, false), (4, 4, 7, false), (3, 4, 7, false), (2, 4, 7, false), (4, 1, 7, true), (3, 1, 7, true),
            (2, 1, 7, true), (4, 4, 7, true), (2, 4, 7, true), (4, 1, 8, false), (3, 1, 8, false), (2, 1, 8, false), (4, 4, 8, false), (2, 4, 8, false),
            (4, 1, 8, true), (2, 1, 8, true), (4, 4, 8, true), (4, 1, 9, false), (3, 1, 9, false), (2, 1, 9, false), (4, 4, 9, false), (3, 4, 9, false),
            (4, 1, 9, true), (3, 1, 9, true), (4, 1, 10, false), (4, 4, 10, false), (4, 1, 10, true), (4, 4, 9, true), (2, 4, 9, false),
            (4, 1, 11, false), (4, 4, 11, false), (3, 4, 11, false), (2, 4, 11, false), (4, 4, 11, true), (2, 4, 11, true),
            (4, 1, 12, false), (4, 4, 12, false), (3, 4, 12, false), (2, 4, 12, false), (4, 4, 12, true), (3, 4, 12, true), (2, 4, 12, true),
            (4, 4, 13, false), (3, 4, 13, false), (2, 4, 13, false), (4, 4, 13, true), (2, 4, 13, true),
            (4, 4, 14, false), (3, 4, 14, false), (2, 4, 14, false), (4, 4, 14, true), (2, 4, 14, true),
            (4, 4, 15, false), (4, 4, 15, true), (4, 4, 16, false), (4, 4, 16, true),
            (4, 4, 17, false), (4, 4, 17, true), (4, 4, 18, false), (4, 4, 18, true) }
        .SelectMany(e => (e.Item4 ? new[] { NuqLayout.Dense, NuqLayout.SparseKeys } : new[] { NuqLayout.Slots }).Select(l => (e.Item1, e.Item2, e.Item3, l)))
        .ToArray();

    private CudaModule Lab() => _lab ??= _production.Loader.Load(Source(), SourceFile);

    public void Dispose() => _lab?.Dispose();

    private sealed class OneVersion(DecodeKernelVersions all, int version) : ISplitKernels
    {
        public int Version => version;
        public CudaKernel Attention(int keyBits, int valueBits, int group, NuqLayout layout = NuqLayout.Slots) =>
            all.Attention(keyBits, valueBits, group, version, layout);
    }
}
