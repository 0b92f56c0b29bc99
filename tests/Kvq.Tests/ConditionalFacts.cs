using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Kvq.Tests;

// xunit v2: a test that cannot run here is skipped with the reason (reported as skipped), never passed silently.

/// <summary>A [Fact] that runs on Linux only; elsewhere it is skipped, saying why it needs Linux.</summary>
public sealed class LinuxFactAttribute : FactAttribute
{
    public LinuxFactAttribute(string why)
    {
        if (!OperatingSystem.IsLinux()) Skip = $"Linux only: {why}";
    }
}

/// <summary>A [Theory] that runs on Linux only; elsewhere it is skipped, saying why it needs Linux.</summary>
public sealed class LinuxTheoryAttribute : TheoryAttribute
{
    public LinuxTheoryAttribute(string why)
    {
        if (!OperatingSystem.IsLinux()) Skip = $"Linux only: {why}";
    }
}

/// <summary>A [Theory] of AVX-512 kernels; skipped, saying so, on a machine without AVX-512.</summary>
public sealed class Avx512TheoryAttribute : TheoryAttribute
{
    public static bool Supported => Avx512F.IsSupported && Vector512.IsHardwareAccelerated;

    public Avx512TheoryAttribute(string why)
    {
        if (!Supported) Skip = $"this machine has no AVX-512: {why}";
    }
}

/// <summary>A [Fact] of AVX-512 kernels; skipped, saying so, on a machine without AVX-512.</summary>
public sealed class Avx512FactAttribute : FactAttribute
{
    public Avx512FactAttribute(string why)
    {
        if (!Avx512TheoryAttribute.Supported) Skip = $"this machine has no AVX-512: {why}";
    }
}

/// <summary>A [Fact] of the AVX2 kernels (x64 with AVX2 and FMA); skipped, saying so, elsewhere.</summary>
public sealed class Avx2FactAttribute : FactAttribute
{
    public Avx2FactAttribute(string why)
    {
        if (!(Avx2.IsSupported && Fma.IsSupported)) Skip = $"this machine has no AVX2/FMA: {why}";
    }
}

/// <summary>A [Theory] of the AVX2 kernels (x64 with AVX2 and FMA); skipped, saying so, elsewhere.</summary>
public sealed class Avx2TheoryAttribute : TheoryAttribute
{
    public Avx2TheoryAttribute(string why)
    {
        if (!(Avx2.IsSupported && Fma.IsSupported)) Skip = $"this machine has no AVX2/FMA: {why}";
    }
}
