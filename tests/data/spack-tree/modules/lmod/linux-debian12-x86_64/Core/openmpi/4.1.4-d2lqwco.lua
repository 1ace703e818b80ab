-- -*- lua -*-
-- Module file created by spack (@SPACK_URL@) on 2026-11-25 06:17:39.199139
--
-- openmpi@4.1.4+atomics~cuda~cxx~cxx_exceptions~debug+fortran~gpfs~internal-hwloc~internal-libevent~internal-pmix~ipv6~java~lustre~memchecker~openshmem~orterunprefix~rocm+romio+rsh~static~two_level_namespace+vt+wrapper-rpath build_system=autotools fabrics:=none romio-filesystem:=none schedulers:=none platform=linux os=debian12 target=x86_64/d2lqwco
--

whatis([[Name : openmpi]])
whatis([[Version : 4.1.4]])
whatis([[Target : x86_64]])
whatis([[Short description : An open source Message Passing Interface implementation.]])
whatis([[Configure options : unknown, software installed outside of Spack]])

help([[Name   : openmpi]])
help([[Version: 4.1.4]])
help([[Target : x86_64]])
help()
help([[An open source Message Passing Interface implementation. The Open MPI
Project is an open source Message Passing Interface implementation that
is developed and maintained by a consortium of academic, research, and
industry partners. Open MPI is therefore able to combine the expertise,
technologies, and resources from all across the High Performance
Computing community in order to build the best MPI library available.
Open MPI offers advantages for system and software vendors, application
developers and computer science researchers.]])

-- Services provided by the package
family("mpi")

-- Loading this module unlocks the path below unconditionally
prepend_path("MODULEPATH", "@SITE@/modules/lmod/linux-debian12-x86_64/openmpi/4.1.4-d2lqwco/Core")

-- Try to load variables into path to see if providers are there

-- Change MODULEPATH based on the result of the tests above

-- Set variables to notify the provider of the new services
setenv("LMOD_MPI_NAME", "openmpi")
setenv("LMOD_MPI_VERSION", "4.1.4-d2lqwco")


prepend_path("MANPATH", "/usr/share/man", ":")
prepend_path("ACLOCAL_PATH", "/usr/share/aclocal", ":")
prepend_path("PKG_CONFIG_PATH", "/usr/lib/pkgconfig", ":")
prepend_path("PKG_CONFIG_PATH", "/usr/share/pkgconfig", ":")
setenv("MPICC", "/usr/bin/mpicc")
setenv("MPICXX", "/usr/bin/mpic++")
setenv("MPIF77", "/usr/bin/mpif77")
setenv("MPIF90", "/usr/bin/mpif90")
setenv("MPIFC", "/usr/bin/mpifort")
append_path("MANPATH", "", ":")

